// gust's built-in Node.js invoker. It serves HTTP/1.1 on the listening Unix socket gust
// passes as fd 3 and calls the function's exported handler:
//   module.exports = (x) => x ** 2              plain: gets the body (JSON parsed), returns a value
//   module.exports = async (event, context) =>  full: gets the request, returns a value or
//                                               { statusCode, headers, body }
'use strict';
const http = require('http');
const path = require('path');
const { AsyncLocalStorage } = require('async_hooks');

// Every line written during a call starts with \x1f<call id>\x1f, which gust strips and
// uses to tag the line; AsyncLocalStorage keeps the id right across awaits and
// concurrent calls.
const current = new AsyncLocalStorage();
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write.bind(stream);
  let atStart = true;
  stream.write = (chunk, encoding, cb) => {
    const id = current.getStore();
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (!id) {
      if (text.length) atStart = text.endsWith('\n');
      return write(chunk, encoding, cb);
    }
    const tag = '\x1f' + id + '\x1f';
    let out = '';
    for (const piece of text.split(/(?<=\n)/)) {
      if (!piece) continue;
      if (atStart) out += tag;
      out += piece;
      atStart = piece.endsWith('\n');
    }
    return write(out, typeof encoding === 'function' ? encoding : 'utf8', typeof encoding === 'function' ? undefined : cb);
  };
}

function isJson(ctype) {
  const t = (ctype || '').split(';')[0].trim().toLowerCase();
  return t === 'application/json' || t.endsWith('+json');
}

class BadBody extends Error {}

function decodeBody(headers, raw, strict) {
  const ctype = headers['content-type'] || '';
  if (raw.length && isJson(ctype)) {
    try { return JSON.parse(raw.toString('utf8')); } catch (e) { throw new BadBody('the body is not valid JSON: ' + e.message); }
  }
  const text = raw.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(raw)) return raw;
  const t = ctype.split(';')[0].trim().toLowerCase();
  if (!strict && text && (t === '' || t === 'text/plain' || t === 'application/x-www-form-urlencoded')) {
    try { return JSON.parse(text); } catch (_) { /* plain text */ }
  }
  return text;
}

async function loadHandler() {
  const file = path.resolve(process.env.GUST_CODE, process.env.GUST_HANDLER);
  let mod;
  try {
    mod = require(file);
  } catch (e) {
    if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
      mod = await import(require('url').pathToFileURL(file).href);
    } else {
      throw e;
    }
  }
  const fn = typeof mod === 'function' ? mod
    : typeof mod.handler === 'function' ? mod.handler
    : mod.default && typeof mod.default === 'function' ? mod.default
    : mod.default && typeof mod.default.handler === 'function' ? mod.default.handler
    : null;
  if (!fn) {
    throw new Error(`${process.env.GUST_HANDLER} exports no function (export one, or one named "handler"); it exports: ${Object.keys(mod).join(', ') || 'nothing'}`);
  }
  return fn;
}

function isStream(v) {
  return v && (typeof v[Symbol.asyncIterator] === 'function' || (typeof v.next === 'function' && typeof v[Symbol.iterator] === 'function'));
}

async function send(res, result) {
  let status = 200; let headers = {}; let body = result;
  if (result && typeof result === 'object' && !Buffer.isBuffer(result) && !isStream(result) && ('statusCode' in result)) {
    status = result.statusCode; headers = result.headers || {}; body = result.body;
  }
  const has = (h) => Object.keys(headers).some((k) => k.toLowerCase() === h);
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.statusCode = status;
  if (body === undefined || body === null) return res.end();
  if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
    if (!has('content-type')) res.setHeader('Content-Type', 'application/octet-stream');
    return res.end(body);
  }
  if (typeof body === 'string') {
    if (!has('content-type')) res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    return res.end(body);
  }
  if (isStream(body)) {
    if (!has('content-type')) res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.flushHeaders();
    for await (const chunk of body) {
      res.write(typeof chunk === 'string' || Buffer.isBuffer(chunk) ? chunk : JSON.stringify(chunk));
    }
    return res.end();
  }
  if (!has('content-type')) res.setHeader('Content-Type', 'application/json');
  return res.end(JSON.stringify(body));
}

function fail(res, status, code, message) {
  if (res.headersSent) { res.destroy(); return; }
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ error: code, message }));
}

// Serves calls on the listening socket gust passed as fd 3. `handler` resolves to the
// function once its code is loaded; a call that arrives first waits for it.
function serve(handler) {
  const server = http.createServer((req, res) => current.run(req.headers['x-call-id'] || '', () => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks);
      const url = req.url || '/';
      const q = url.indexOf('?');
      try {
        if (warmUp && req.headers['x-gust-warm-up'] === warmUp) {
          return await send(res, { warm: decodeBody(req.headers, raw, false) });
        }
        const fn = await handler;
        if (req.headers['x-gust-probe'] !== undefined) {
          // gust's start-up check (callers cannot send this header): the handler loaded.
          res.statusCode = 204;
          return res.end();
        }
        let result;
        if (fn.length >= 2) {
          const event = {
            method: req.method,
            path: q < 0 ? url : url.slice(0, q),
            queryString: q < 0 ? '' : url.slice(q + 1),
            query: Object.fromEntries(new URLSearchParams(q < 0 ? '' : url.slice(q + 1))),
            headers: req.headers,
            body: decodeBody(req.headers, raw, true),
            rawBody: raw,
          };
          const context = {
            callId: req.headers['x-call-id'] || '',
            function: process.env.GUST_FUNCTION,
            revision: process.env.GUST_REVISION,
            instance: process.env.GUST_INSTANCE,
          };
          result = await fn(event, context);
        } else {
          result = await fn(decodeBody(req.headers, raw, false));
        }
        await send(res, result);
      } catch (e) {
        if (e instanceof BadBody) return fail(res, 400, 'bad_request', e.message);
        console.error(e && e.stack || String(e));
        fail(res, 500, 'handler_error', `${e && e.name || 'Error'}: ${e && e.message || e}`);
      }
    });
  }));
  server.keepAliveTimeout = 0;
  server.headersTimeout = 0;
  server.requestTimeout = 0;
  server.listen({ fd: 3 });
  return server;
}

// Loads the function, or reports why not and exits 3 (gust then shows that output).
async function load() {
  try {
    return await loadHandler();
  } catch (e) {
    console.error(e && e.stack || String(e));
    console.error(`gust: could not load handler ${JSON.stringify(process.env.GUST_HANDLER)}`);
    process.exit(3);
  }
}

// The secret a spare's call to itself carries, so only that call is answered by the
// invoker rather than the function, however late it arrives.
let warmUp = null;

// A warm spare (`--generic`): listen, and answer one call to itself so the lazily loaded
// parts of node's HTTP stack are loaded and compiled before any function needs them.
// Then wait for gust to write the instance this process is to become (one JSON line on
// stdin: its whole environment and working directory), take them on and load the
// function. Calls that arrive meanwhile wait for it.
function spare() {
  warmUp = require('crypto').randomBytes(16).toString('hex');
  let become;
  const server = serve(new Promise((resolve) => { become = resolve; }));
  const warm = http.request({
    socketPath: process.env.GUST_SOCKET, method: 'POST', agent: false,
    headers: { 'x-gust-warm-up': warmUp, 'content-type': 'application/json' },
  }, (res) => res.resume());
  warm.on('error', () => {});
  warm.end('{"warm":true}');
  const parts = [];
  process.stdin.on('data', (chunk) => {
    parts.push(chunk);
    if (chunk[chunk.length - 1] !== 0x0a) return;
    process.stdin.destroy();
    const { env, cwd } = JSON.parse(Buffer.concat(parts).toString('utf8'));
    for (const k of Object.keys(process.env)) delete process.env[k];
    Object.assign(process.env, env);
    process.chdir(cwd);
    if (process.env.AWS_LAMBDA_RUNTIME_API) {
      // A lambda-node instance: its client pulls calls from the Runtime API instead.
      server.close();
      require(path.join(__dirname, 'lambda.js')).run(current);
      return;
    }
    become(load());
  });
  // gust went away without using this process.
  process.stdin.on('end', () => process.exit(0));
}

if (process.argv[2] === '--generic') {
  spare();
} else if (process.env.AWS_LAMBDA_RUNTIME_API) {
  // A lambda-node instance: its client pulls calls from the Runtime API instead.
  require(path.join(__dirname, 'lambda.js')).run(current);
} else {
  load().then(serve);
}
