# gust's built-in AWS Lambda runtime client for Python (the `lambda-python` runtime).
# python.py runs it when AWS_LAMBDA_RUNTIME_API is set: it imports the handler named by
# _HANDLER (`module.function`, as on AWS) and pulls invocations from the instance's
# Runtime API, behaving as awslambdaric does: the same context object, the same error
# documents (Runtime.ImportModuleError, Runtime.HandlerNotFound, Runtime.UnmarshalError,
# Runtime.MarshalError, the exception's class otherwise) and the same log format.
# Only the standard library, and only socket/os/sys/json/time on the cold path.
import os
import socket
import sys
import time

API = "/2018-06-01/runtime"


class InitError(Exception):
    def __init__(self, error_type, message):
        Exception.__init__(self, message)
        self.error_type = error_type
        self.message = message


class CognitoIdentity:
    cognito_identity_id = None
    cognito_identity_pool_id = None


class MobileClient:
    """context.client_context.client, as awslambdaric makes it."""

    def __init__(self, doc):
        for key in ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"):
            setattr(self, key, doc.get(key))


class ClientContext:
    """context.client_context: the Invoke API's X-Amz-Client-Context, decoded."""

    def __init__(self, doc):
        client = doc.get("client")
        self.client = MobileClient(client) if isinstance(client, dict) else None
        self.custom = doc.get("custom")
        self.env = doc.get("env")


class LambdaContext:
    """What awslambdaric passes as `context`."""

    def __init__(self, request_id, deadline_ms, arn, client_context):
        env = os.environ
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = client_context
        self.identity = CognitoIdentity()
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(int(self._deadline_ms - time.time() * 1000), 0)

    def log(self, message):
        sys.stdout.write(message)

    def __repr__(self):
        return "LambdaContext(aws_request_id=%r, function_name=%r)" % (self.aws_request_id, self.function_name)


class Client:
    """HTTP/1.1 to the Runtime API over one kept connection, reconnecting once when the
    kept one turns out closed."""

    def __init__(self, inv, address):
        host, _, port = address.rpartition(":")
        self.inv = inv
        # A bytes host skips the idna codec (and its import) on connect.
        self.addr = (host.encode("ascii"), int(port))
        self.host = "%s:%s" % (host, port)
        self.conn = None

    def request(self, method, path, body=b"", headers=()):
        head = ["%s %s%s HTTP/1.1" % (method, API, path), "Host: " + self.host,
                "Content-Length: %d" % len(body)]
        head.extend("%s: %s" % h for h in headers)
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.connect(self.addr)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.conn = self.inv.Conn(sock)
                self.conn.sock.sendall(data)
                return self._read()
            except (OSError, EOFError):
                self.close()
                if attempt:
                    raise

    def _read(self):
        message = self.conn.read_message()
        if message is None:
            raise EOFError("the Runtime API closed the connection")
        first, headers, body = message
        return int(first.split(" ", 2)[1]), headers, body

    def close(self):
        if self.conn is not None:
            try:
                self.conn.sock.close()
            except OSError:
                pass
            self.conn = None


def _error_doc(json, error_type, message, request_id=None, trace=()):
    doc = {"errorMessage": message, "errorType": error_type, "stackTrace": list(trace)}
    if request_id is not None:
        doc["requestId"] = request_id
    return json.dumps(doc).encode("utf-8")


def _load(inv):
    handler = os.environ.get("_HANDLER", "")
    inv._prepare_path(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError:
        raise InitError("Runtime.MalformedHandlerName", "Bad handler '%s': not enough values to unpack "
                        "(expected 2, got 1)" % handler)
    modname = modname.replace("/", ".")
    import importlib
    try:
        module = importlib.import_module(modname)
    except ImportError as e:
        raise InitError("Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, e))
    except SyntaxError as e:
        raise InitError("Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (modname, e))
    except Exception as e:
        raise InitError(type(e).__name__, str(e))
    fn = getattr(module, fname, None)
    if not callable(fn):
        raise InitError("Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (fname, modname))
    return fn


_logging_ready = False


def _setup_logging():
    """The root logger as AWS sets it up: one handler writing
    `[LEVEL]\\t<time>Z\\t<request id>\\t<message>`, level WARNING unless
    AWS_LAMBDA_LOG_LEVEL says otherwise. Only once the function's code has imported
    logging (checked after its import and before each invocation): importing it costs
    milliseconds of a cold start that most handlers never log through."""
    global _logging_ready
    if _logging_ready or "logging" not in sys.modules:
        return
    _logging_ready = True
    import logging

    class RequestIdFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _inv._current.id
            return True

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.formatter.converter = time.gmtime
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        root.setLevel(level.upper())


# The python.py invoker module, set by run().
_inv = None


def _serve(inv, client, fn):
    json = inv._json()
    current = inv._current
    while True:
        try:
            status, headers, event = client.request("GET", "/invocation/next")
        except (OSError, EOFError) as e:
            sys.stderr.write("gust lambda client: failed to get the next invocation: %s\n" % e)
            sys.stderr.flush()
            os._exit(1)
        if status != 200:
            sys.stderr.write("gust lambda client: /next answered %d: %r\n" % (status, event[:200]))
            sys.stderr.flush()
            os._exit(1)
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        current.id = request_id
        trace = headers.get("lambda-runtime-trace-id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        client_context = headers.get("lambda-runtime-client-context")
        try:
            client_context = json.loads(client_context) if client_context else None
            client_context = ClientContext(client_context) if isinstance(client_context, dict) else None
        except ValueError:
            client_context = None
        _setup_logging()
        deadline = int(headers.get("lambda-runtime-deadline-ms", "0") or 0)
        context = LambdaContext(request_id, deadline, headers.get("lambda-runtime-invoked-function-arn"),
                                client_context)
        path = "/invocation/%s/" % request_id
        try:
            try:
                parsed = json.loads(event) if event else {}
            except ValueError as e:
                raise InitError("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % e)
            result = fn(parsed, context)
            try:
                answer = json.dumps(result).encode("utf-8")
            except (TypeError, ValueError) as e:
                raise InitError("Runtime.MarshalError", "Unable to marshal response: %s" % e)
            client.request("POST", path + "response", answer, [("Content-Type", "application/json")])
        except (OSError, EOFError) as e:
            sys.stderr.write("gust lambda client: the Runtime API failed: %s\n" % e)
            sys.stderr.flush()
            os._exit(1)
        except Exception as e:
            import traceback
            if isinstance(e, InitError):
                error_type, message, frames = e.error_type, e.message, []
            else:
                error_type, message = type(e).__name__, str(e)
                frames = traceback.format_list(traceback.extract_tb(e.__traceback__)[1:])
            # As awslambdaric logs it: the error document, one line.
            sys.stdout.write("[ERROR] %s: %s\n" % (error_type, message))
            for frame in frames:
                sys.stdout.write(frame.replace("\n", " ").rstrip() + "\n")
            doc = _error_doc(json, error_type, message, request_id, frames)
            try:
                client.request("POST", path + "error", doc, [("Content-Type", "application/json")])
            except (OSError, EOFError):
                os._exit(1)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            current.id = ""


def run(inv):
    """The client's main loop; `inv` is the python.py invoker module (its output tagging,
    socket reader and sys.path set-up are shared)."""
    global _inv
    _inv = inv
    sys.stdout = inv._Tagged(sys.stdout)
    sys.stderr = inv._Tagged(sys.stderr)
    json = inv._json()
    client = Client(inv, os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        fn = _load(inv)
        _setup_logging()
    except InitError as e:
        sys.stdout.write("[ERROR] %s: %s\n" % (e.error_type, e.message))
        sys.stdout.flush()
        try:
            client.request("POST", "/init/error", _error_doc(json, e.error_type, e.message),
                           [("Lambda-Runtime-Function-Error-Type", e.error_type)])
        finally:
            os._exit(1)
    concurrency = int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "1") or 1)
    if concurrency <= 1:
        _serve(inv, client, fn)
    import threading
    # Concurrent mode (AWS_LAMBDA_MAX_CONCURRENCY): one poller per slot, each with its
    # own connection; output is tagged per thread.
    local = threading.local()
    local.id = ""
    inv._current = local
    for _ in range(concurrency):
        threading.Thread(target=_serve, args=(inv, Client(inv, os.environ["AWS_LAMBDA_RUNTIME_API"]), fn),
                         daemon=True).start()
    threading.Event().wait()
