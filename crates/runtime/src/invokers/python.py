# gust's built-in Python invoker. It serves HTTP/1.1 on the listening Unix socket gust
# passes as fd 3 and calls the function's handler. Kept import-light on purpose: only
# `socket`, `os` and `sys` on the cold path (no asyncio, http.server or ssl); json,
# threading and traceback are imported when first needed.
import os
import socket
import sys
from _thread import get_ident as _get_ident

MAX_HEADER = 64 * 1024
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
           302: "Found", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class _Tagged:
    """Wraps stdout/stderr so every line written during a call starts with
    \\x1f<call id>\\x1f, which gust strips and uses to tag the line. The tag travels with
    the bytes, so it is exact however late gust reads the pipe. Each thread's text is
    held until its line ends and the whole line is written at once, so lines of calls
    running side by side never interleave."""

    def __init__(self, raw):
        self._raw = raw
        self._partial = {}

    def _emit(self, lines):
        call = _current.id
        if call:
            tag = "\x1f" + call + "\x1f"
            return self._raw.write("".join(tag + line + "\n" for line in lines))
        return self._raw.write("\n".join(lines) + "\n")

    def write(self, text):
        if not text:
            return 0
        ident = _get_ident()
        pending = self._partial.pop(ident, "") + text
        if "\n" not in pending:
            self._partial[ident] = pending
            return len(text)
        done, _, rest = pending.rpartition("\n")
        if rest:
            self._partial[ident] = rest
        self._emit(done.split("\n"))
        return len(text)

    def flush(self):
        rest = self._partial.pop(_get_ident(), None)
        if rest:
            self._emit([rest])
        return self._raw.flush()

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _Current:
    id = ""


_current = _Current()


def _json():
    import json
    return json


class Event:
    """The request as the handler sees it (OpenFaaS python3-http style)."""
    __slots__ = ("method", "path", "query_string", "headers", "body", "raw_body", "_query")

    def __init__(self, method, path, query_string, headers, raw_body):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.raw_body = raw_body
        self.body = _decode_body(headers, raw_body, strict=True)
        self._query = None

    @property
    def query(self):
        if self._query is None:
            from urllib.parse import parse_qsl
            self._query = dict(parse_qsl(self.query_string, keep_blank_values=True))
        return self._query


class Context:
    __slots__ = ("call_id", "function", "revision", "instance")

    def __init__(self, call_id):
        self.call_id = call_id
        self.function = os.environ.get("GUST_FUNCTION", "")
        self.revision = os.environ.get("GUST_REVISION", "")
        self.instance = os.environ.get("GUST_INSTANCE", "")


class BadBody(Exception):
    pass


def _is_json(ctype):
    ctype = ctype.split(";", 1)[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


def _decode_body(headers, raw, strict):
    """JSON content types arrive parsed; other text as str; anything else as bytes. In the
    plain form (strict=False) text that parses as JSON (curl -d 3) arrives parsed too."""
    ctype = headers.get("content-type", "")
    if raw and _is_json(ctype):
        try:
            return _json().loads(raw)
        except ValueError as e:
            raise BadBody("the body is not valid JSON: %s" % e)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    if not strict and text and ctype.split(";", 1)[0].strip().lower() in ("", "text/plain", "application/x-www-form-urlencoded"):
        try:
            return _json().loads(text)
        except ValueError:
            pass
    return text


def _load_handler():
    spec = os.environ["GUST_HANDLER"]
    _prepare_path(os.environ["GUST_CODE"])
    module_name, func_name = spec.rsplit(".", 1)
    return _finish_load(module_name, func_name, spec)


def _prepare_path(code):
    """The function's code first on sys.path, then its own dependencies, then the
    interpreter's site-packages; bytecode kept out of the code directory."""
    prefix = os.environ.get("GUST_PYCACHE")
    if prefix:
        sys.pycache_prefix = prefix
    sys.path.insert(0, code)
    # Dependencies from requirements.txt, installed at deploy into this revision alone.
    deps = os.path.join(code, ".gust", "python")
    if os.path.isdir(deps):
        sys.path.insert(1, deps)
    # -S skips site's .pth hooks (they cost tens of ms); put site-packages on the path
    # ourselves so installed packages still import.
    try:
        import site
        for p in site.getsitepackages():
            if p not in sys.path:
                sys.path.append(p)
    except Exception:
        pass


def _finish_load(module_name, func_name, spec):
    import importlib
    module = importlib.import_module(module_name)
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise RuntimeError("handler %r: module %r has no function %r" % (spec, module_name, func_name))
    code_obj = getattr(fn, "__code__", None)
    argc = code_obj.co_argcount if code_obj is not None else 1
    if hasattr(fn, "__self__"):
        argc -= 1
    return fn, argc >= 2


def _to_response(result):
    """Returns (status, headers, body) where body is bytes or an iterator of chunks."""
    status, headers = 200, {}
    if isinstance(result, dict) and ("statusCode" in result or "body" in result and "headers" in result):
        status = int(result.get("statusCode", 200))
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        result = result.get("body", b"")
    lower = {k.lower() for k in headers}
    if result is None:
        body = b""
    elif isinstance(result, bytes):
        body = result
        if "content-type" not in lower:
            headers["Content-Type"] = "application/octet-stream"
    elif isinstance(result, str):
        body = result.encode("utf-8")
        if "content-type" not in lower:
            headers["Content-Type"] = "text/plain; charset=utf-8"
    elif isinstance(result, (dict, list, int, float, bool)):
        body = _json().dumps(result).encode("utf-8")
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
    elif hasattr(result, "__iter__") or hasattr(result, "__next__"):
        body = iter(result)
        if "content-type" not in lower:
            headers["Content-Type"] = "text/plain; charset=utf-8"
    else:
        body = str(result).encode("utf-8")
        if "content-type" not in lower:
            headers["Content-Type"] = "text/plain; charset=utf-8"
    return status, headers, body


def _error(status, code, message):
    body = _json().dumps({"error": code, "message": message}).encode("utf-8")
    return status, {"Content-Type": "application/json"}, body


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self):
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head, self.buf = self.buf[:i], self.buf[i + 4:]
                return head
            if len(self.buf) > MAX_HEADER or not self.fill():
                return None

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise EOFError("connection closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if not self.fill():
                raise EOFError("connection closed mid-body")

    def read_message(self):
        """One HTTP/1.1 message (a request, or a response to the Lambda client): its first
        line, its headers with lowercase names, and its body; None when the peer closed."""
        head = self.read_head()
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self.read_chunked()
        else:
            body = self.read_exact(int(headers.get("content-length", "0") or 0))
        return lines[0], headers, body

    def read_chunked(self):
        parts = []
        while True:
            size = int(self.read_line().split(b";", 1)[0], 16)
            if size == 0:
                while self.read_line():
                    pass
                return b"".join(parts)
            parts.append(self.read_exact(size))
            self.read_line()


def serve_conn(sock, fn, full):
    c = Conn(sock)
    try:
        while True:
            message = c.read_message()
            if message is None:
                return
            first, headers, raw = message
            method, target, _version = first.split(" ", 2)
            path, _, query = target.partition("?")
            keep = headers.get("connection", "").lower() != "close"
            if "x-gust-probe" in headers:
                # gust's start-up check (callers cannot send this header): the handler
                # loaded before the first accept, so this process is ready.
                write_response(sock, 204, {}, b"", keep)
                if not keep:
                    return
                continue
            status, rheaders, body = call(fn, full, method, path, query, headers, raw)
            write_response(sock, status, rheaders, body, keep)
            if not keep:
                return
    except (EOFError, ConnectionError, OSError):
        return
    finally:
        sock.close()


def call(fn, full, method, path, query, headers, raw):
    _current.id = headers.get("x-call-id", "")
    try:
        if full:
            result = fn(Event(method, path, query, headers, raw), Context(headers.get("x-call-id", "")))
        else:
            result = fn(_decode_body(headers, raw, strict=False))
        return _to_response(result)
    except BadBody as e:
        return _error(400, "bad_request", str(e))
    except Exception as e:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        return _error(500, "handler_error", "%s: %s" % (type(e).__name__, e))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        _current.id = ""


def write_response(sock, status, headers, body, keep):
    reason = REASONS.get(status, "Status")
    out = ["HTTP/1.1 %d %s\r\n" % (status, reason)]
    for k, v in headers.items():
        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
            out.append("%s: %s\r\n" % (k, v))
    if not keep:
        out.append("Connection: close\r\n")
    if isinstance(body, bytes):
        out.append("Content-Length: %d\r\n\r\n" % len(body))
        # One write for head and body: two small writes can stall on delayed ACKs.
        sock.sendall("".join(out).encode("latin-1") + body)
        return
    out.append("Transfer-Encoding: chunked\r\n\r\n")
    sock.sendall("".join(out).encode("latin-1"))
    try:
        for chunk in body:
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            elif not isinstance(chunk, bytes):
                chunk = _json().dumps(chunk).encode("utf-8")
            if chunk:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except Exception:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        # Cut the stream without the final chunk so the caller sees it is incomplete.
        raise ConnectionError("handler failed while streaming")
    sock.sendall(b"0\r\n\r\n")


def _lambda():
    """The built-in Lambda runtime client (lambda.py, beside this file), loaded once."""
    mod = sys.modules.get("gust_lambda")
    if mod is None:
        import importlib.util
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lambda.py")
        spec = importlib.util.spec_from_file_location("gust_lambda", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["gust_lambda"] = mod
    return mod


def main():
    if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        # A `lambda-python` instance: pull calls from its Runtime API instead of serving.
        _lambda().run(sys.modules[__name__])
        return
    listener = socket.socket(fileno=3)
    sys.stdout = _Tagged(sys.stdout)
    sys.stderr = _Tagged(sys.stderr)
    try:
        fn, full = _load_handler()
    except Exception:
        import traceback
        traceback.print_exc()
        sys.stderr.write("gust: could not load handler %r\n" % os.environ.get("GUST_HANDLER"))
        sys.stderr.flush()
        os._exit(3)
    concurrency = int(os.environ.get("GUST_CONCURRENCY", "1"))
    if concurrency <= 1:
        while True:
            conn, _ = listener.accept()
            serve_conn(conn, fn, full)
    import threading
    # One call id per thread when calls run concurrently.
    global _current
    _current = threading.local()
    _current.id = ""
    _Current.id = ""
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_conn, args=(conn, fn, full), daemon=True).start()


def _emit(event):
    """One JSON line to gust on the zygote's stdout; os.write, as it runs in a signal
    handler too (lines stay far below PIPE_BUF, so each write is atomic)."""
    os.write(1, (_json().dumps(event) + "\n").encode())


def _reap(_signum, _frame):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSIGNALED(status):
            _emit({"exit": pid, "signal": os.WTERMSIG(status)})
        else:
            _emit({"exit": pid, "code": os.WEXITSTATUS(status)})


def _recv_request(sock):
    """One request: a JSON line with the instance's listener, stdout and stderr attached.
    None when the other end has closed."""
    # 64 KiB at a time: a request is a few KiB, and a buffer past malloc's mmap
    # threshold would cost a map and an unmap on every cold start.
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 3)
    if not data:
        return None, fds
    while not data.endswith(b"\n"):
        more = sock.recv(1 << 16)
        if not more:
            return None, fds
        data += more
    return data, fds


def _child_setup(prctl):
    """First thing in any forked child: its own process group, gone with the zygote."""
    import signal
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
    os.setpgid(0, 0)
    if prctl is not None:
        prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: go with the zygote (which goes with gust)


def _become(request, fds):
    """In a forked child: take the instance's pipes and socket, its environment and
    working directory, and serve as that function's instance."""
    import time
    listener, out, err = fds
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.dup2(listener, 3)  # closes the zygote's request socket in this child
    for fd in fds:
        if fd > 3:
            os.close(fd)
    request = _json().loads(request)
    # The instance's environment, written as a difference from the zygote's (which it
    # mostly shares): each variable set is a putenv and a copied page or two.
    env = request["env"]
    for k in [k for k in os.environ if k not in env]:
        del os.environ[k]
    for k, v in env.items():
        if os.environ.get(k) != v:
            os.environ[k] = v
    os.chdir(request["cwd"])
    time.tzset()
    read = os.environ.pop("GUST_SANDBOX_READ", None)
    write = os.environ.pop("GUST_SANDBOX_WRITE", None)
    tcp = os.environ.pop("GUST_SANDBOX_TCP", None)
    isolate = os.environ.pop("GUST_ISOLATE", None)
    seccomp = os.environ.pop("GUST_SECCOMP", None)
    if read is not None:
        # Isolation `basic`: narrow the zygote's sandbox to this function before any of
        # its code runs; `isolated`: first its cgroup and namespaces, and the seccomp
        # filter last (the zygote has none there: it must unshare and mount for its
        # children). Unsandboxed is not an option: failing to, the child exits.
        try:
            if isolate is not None:
                _isolate(_json().loads(isolate))
            ports = None if tcp is None else [int(p) for p in tcp.split(",") if p]
            _landlock(read.split(":"), (write or "").split(":"), ports)
            if seccomp is not None:
                _seccomp(bytes.fromhex(seccomp))
        except Exception as e:
            sys.stderr.write("gust: could not enter the instance's sandbox: %s\n" % e)
            sys.stderr.flush()
            os._exit(75)
    main()


def _landlock(read, write, tcp_ports=None):
    """Adds a Landlock layer: `read` paths readable and executable, `write` paths fully
    usable, nothing else; from ABI 6 also no signals or abstract sockets outside it; with
    `tcp_ports` (network = "none") no TCP bind and no TCP connect but to those ports. The
    zygote's seccomp filter and no_new_privs are inherited already."""
    import ctypes
    import stat
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    create, add, restrict = 444, 445, 446

    def check(r, what):
        if r < 0:
            err = ctypes.get_errno()
            raise OSError(err, "%s: %s" % (what, os.strerror(err)))
        return r

    abi = check(libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint(1)), "landlock ABI")
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= 1 << 13
    if abi >= 3:
        handled |= 1 << 14

    class Attr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class Rule(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("access", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    net = 0
    if tcp_ports is not None:
        if abi < 4:
            raise OSError("network = none needs Landlock ABI 4, this kernel has %d" % abi)
        net = 1 | 2

    class Port(ctypes.Structure):
        _fields_ = [("access", ctypes.c_uint64), ("port", ctypes.c_uint64)]

    attr = Attr(handled, net, 3 if abi >= 6 else 0)
    size = ctypes.sizeof(Attr) if abi >= 6 else (16 if net else 8)
    ruleset = check(libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint(0)), "ruleset")
    read_only, file_rights = 1 | 4 | 8, 1 | 2 | 4 | (1 << 14)
    try:
        for path, rights in [(p, read_only) for p in read if p] + [(p, handled) for p in write if p]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    rights &= file_rights
                rule = Rule(rights & handled, fd)
                check(libc.syscall(add, ruleset, ctypes.c_long(1), ctypes.byref(rule), ctypes.c_uint(0)), path)
            finally:
                os.close(fd)
        for port in tcp_ports or ():
            rule = Port(2, port)
            check(libc.syscall(add, ruleset, ctypes.c_long(2), ctypes.byref(rule), ctypes.c_uint(0)), "port %d" % port)
        check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")
        check(libc.syscall(restrict, ruleset, ctypes.c_uint(0)), "restrict")
    finally:
        os.close(ruleset)


def _isolate(spec):
    """Level `isolated`, in a zygote child: what gust's own launcher does between fork
    and exec (spawn.rs). Joins the instance's cgroups, unshares its namespaces, mounts a
    private / (propagation), /tmp and /dev/shm, sets the host name, and forks twice so
    that the process going on is PID 2 of its PID namespace: this one waits outside (the
    pid gust knows), the next is the namespace's init (its own /proc; it reaps orphans),
    and only the third returns, to load the function."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def check(r, what):
        if r != 0:
            err = ctypes.get_errno()
            raise OSError(err, "%s: %s" % (what, os.strerror(err)))

    groups = _spare_cgroup(spec["parents"])
    for index, name, value, required in spec["limits"]:
        try:
            with open(os.path.join(groups[index], name), "w") as f:
                f.write(value)
        except OSError:
            if required:
                raise
    check(libc.unshare(spec["flags"]), "unshare")
    ms_nosuid, ms_nodev, ms_noexec, ms_rec, ms_private = 2, 4, 8, 0x4000, 1 << 18
    check(libc.mount(None, b"/", None, ms_rec | ms_private, None), "private /")
    for target in (b"/tmp", b"/dev/shm"):
        check(libc.mount(b"tmpfs", target, b"tmpfs", ms_nosuid | ms_nodev, spec["tmpfs"].encode()), target.decode())
    name = spec["hostname"].encode()
    libc.sethostname(name, len(name))
    # Here, outside: wait for the init. In the init (PID 1): its own /proc.
    _fork_leaving_waiter(libc, True)
    check(libc.mount(b"proc", b"/proc", b"proc", ms_nosuid | ms_nodev | ms_noexec, None), "/proc")
    # The init waits for the function, which goes on.
    _fork_leaving_waiter(libc, False)


def _fork_leaving_waiter(libc, outside):
    """Forks; the parent becomes a waiting process (_wait_then_exit) and never returns,
    the child (gone with it) goes on."""
    child = os.fork()
    if child:
        _wait_then_exit(child, outside)
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


_spare = None


def _spare_cgroup(parents):
    """Makes and joins `spare-<pid>` below each of gust's cgroup parents, once: a waiting
    child does it ahead of need, since the first move into a cgroup v1 hierarchy waits
    for an RCU grace period of the kernel (milliseconds); gust adopts the group by that
    name once the child becomes an instance."""
    global _spare
    if _spare is None:
        groups = [os.path.join(p, "spare-%d" % os.getpid()) for p in parents]
        for g in groups:
            os.makedirs(g, exist_ok=True)
            with open(os.path.join(g, "cgroup.procs"), "w") as f:
                f.write("0")
        _spare = groups
    return _spare


def _wait_then_exit(child, outside):
    """One of the two waiting processes of _isolate: holds no descriptor, waits for
    `child` (the init reaps any other child too) and exits as it did; the one outside
    ignores SIGTERM (it reaches the function through the process group) and re-raises
    the signal the init reports as 128 + its number."""
    import signal
    os.closerange(0, 1 << 16)
    if outside:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            pid, status = os.waitpid(child if outside else -1, 0)
        except ChildProcessError:
            os._exit(127)
        if pid == child:
            break
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
        if not outside or not 129 <= code < 160:
            os._exit(code)
        sig = code - 128
    if outside:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def _seccomp(program):
    """Installs gust's seccomp filter (a BPF program, 8 bytes an instruction)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    code = ctypes.create_string_buffer(program, len(program))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Fprog(len(program) // 8, ctypes.cast(code, ctypes.c_void_p))
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "seccomp: %s" % os.strerror(err))


def _run_child(work):
    try:
        work()
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(70)


# The stand-in handler a waiting child imports in its rehearsal, and the directory the
# zygote wrote it to (None if it could not).
_REHEARSAL_MODULE = "_gust_rehearsal_handler"
_rehearsal_dir = None


def _prepare_rehearsal():
    """In the zygote: writes the stand-in handler and imports it once, so its bytecode is
    cached as a deployed function's is (its start-up check imported it). Only a missed
    speed-up if it cannot be written."""
    global _rehearsal_dir
    d = os.path.join(os.getcwd(), "rehearsal")
    try:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, _REHEARSAL_MODULE + ".py"), "w") as f:
            f.write("def handle(data):\n    return ''\n")
        _import_rehearsal(d)
    except Exception:
        return
    _rehearsal_dir = d


def _import_rehearsal(d):
    """Loads the stand-in handler from `d` as a cold start loads the user's (the same
    path set-up, its bytecode under a pycache prefix), then forgets it."""
    path, prefix = list(sys.path), sys.pycache_prefix
    sys.pycache_prefix = d + "-pycache"
    try:
        _prepare_path(d)
        _finish_load(_REHEARSAL_MODULE, "handle", _REHEARSAL_MODULE + ".handle")
    finally:
        sys.path[:] = path
        sys.pycache_prefix = prefix
        sys.modules.pop(_REHEARSAL_MODULE, None)
        sys.path_importer_cache.pop(d, None)


def _rehearse():
    """Walks, while waiting, the paths a cold start takes: parsing a request, setting the
    environment, importing a module from a directory new to sys.path, and one whole call
    over a socket pair to a stand-in handler. Every object they touch has its reference
    count written, so the pages holding them are copied from the zygote now rather than
    during the cold start (it halves the time from hand-over to first answer; importing
    a real module here took the handler's import from 0.52-0.61 to 0.38 ms)."""
    import time
    request = _json().loads(_json().dumps({"env": dict(os.environ), "cwd": os.getcwd()}))
    for k, v in request["env"].items():
        os.environ[k] = v  # the same value: only the path of setting one is walked
    time.tzset()
    if _rehearsal_dir is not None:
        try:
            _import_rehearsal(_rehearsal_dir)
        except Exception:
            pass
    ours, theirs = socket.socketpair()
    ours.sendall(b"POST /r?q=1 HTTP/1.1\r\nHost: gust\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 8\r\nConnection: close\r\n\r\n{\"a\": 1}")
    serve_conn(theirs, lambda data: {"b": data}, False)
    ours.recv(1 << 16)
    ours.close()


def _prefork(prctl, theirs):
    """Forks a child that waits on `theirs` (its end of a socket pair gust made) for the
    request gust sends it there, so a cold start skips the fork itself, the copy-on-write
    faults of a child's first steps and a hop through this process. Returns its pid."""
    import gc
    gc.freeze()  # the collector must not touch (and so copy) the zygote's objects
    pid = os.fork()
    if pid == 0:

        def wait_then_become():
            _child_setup(prctl)
            parents = os.environ.get("GUST_CGROUP_PARENTS")
            if parents:
                try:
                    _spare_cgroup(parents.split(":"))
                except OSError:
                    pass  # tried again when it becomes an instance, which fails if this does

            _rehearse()
            data, fds = _recv_request(theirs)
            if data is None:
                os._exit(0)  # gust let it go
            theirs.close()
            _become(data, fds)
        _run_child(wait_then_become)
    theirs.close()
    return pid


def zygote():
    """SOCK-style zygote: the interpreter and the invoker's imports are loaded once. Each
    request on fd 3 is a JSON line with descriptors attached (SCM_RIGHTS): `{"spare":
    true}` with one end of a socket pair forks a child that waits on it for gust's
    request (gust then hands cold starts to it directly); a request with an instance's
    listener, stdout and stderr forks a child that becomes that instance now. Each
    request gets one reply, in order, as a JSON line on stdout (a pid, or an error), and
    every child's exit is reported there too."""
    import signal
    # What every instance would import anyway, imported once here.
    import importlib  # noqa: F401
    import threading  # noqa: F401
    import time  # noqa: F401
    import traceback  # noqa: F401
    import site
    _json()
    site.getsitepackages()
    # The Lambda client and the logging module it sets up, for lambda-python instances.
    import logging  # noqa: F401
    _lambda()
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except Exception:
        prctl = None
    _prepare_rehearsal()
    ctl = socket.socket(fileno=3)
    signal.signal(signal.SIGCHLD, _reap)
    _emit({"ready": os.getpid()})
    while True:
        data, fds = _recv_request(ctl)
        if data is None:
            os._exit(0)
        want = 1 if data.startswith(b'{"spare"') else 3
        if len(fds) != want:
            for fd in fds:
                os.close(fd)
            _emit({"error": "expected %d descriptors, got %d" % (want, len(fds))})
            continue
        if want == 1:
            _emit({"pid": _prefork(prctl, socket.socket(fileno=fds[0]))})
            continue
        pid = os.fork()
        if pid == 0:

            def become_now():
                _child_setup(prctl)
                _become(data, fds)
            _run_child(become_now)
        _emit({"pid": pid})
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        zygote()
    else:
        main()
