// gust's built-in AWS Lambda runtime client for Node.js (the `lambda-node` runtime). It
// loads the handler named by _HANDLER (`file.export`, as on AWS: index.mjs, .js or .cjs,
// CommonJS or ES module) and pulls invocations from the instance's Runtime API at
// AWS_LAMBDA_RUNTIME_API, behaving as aws-lambda-ric does: async handlers, promise
// handlers and callback handlers; the same context; errors posted as {errorType,
// errorMessage, trace}; init failures as Runtime.ImportModuleError,
// Runtime.HandlerNotFound or Runtime.UserCodeSyntaxError; console lines as
// `<time>\t<request id>\t<LEVEL>\t<message>`. node.js runs it (`run`) when the Runtime
// API is set, so output is tagged the way every Node instance's is.
'use strict';
const http = require('http');
const path = require('path');
const fs = require('fs');
const util = require('util');

const [host, port] = (() => {
  const api = process.env.AWS_LAMBDA_RUNTIME_API || '';
  const i = api.lastIndexOf(':');
  return [api.slice(0, i), Number(api.slice(i + 1))];
})();
// AWS_LAMBDA_MAX_CONCURRENCY (set when scale.concurrency > 1) runs that many pollers.
const concurrency = Math.max(1, Number(process.env.AWS_LAMBDA_MAX_CONCURRENCY || 1) || 1);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const API = '/2018-06-01/runtime';

// The request id of the invocation in progress, for console lines and gust's log tags:
// node.js's AsyncLocalStorage (which its output tagging reads), handed over by `run`.
let current = null;
const currentId = () => (current && current.getStore()) || '';

for (const [method, level] of [['log', 'INFO'], ['info', 'INFO'], ['debug', 'DEBUG'], ['warn', 'WARN'], ['error', 'ERROR'], ['trace', 'TRACE']]) {
  console[method] = (...args) => {
    const line = util.format(...args).replace(/\n/g, '\r');
    process.stdout.write(`${new Date().toISOString()}\t${currentId() || 'undefined'}\t${level}\t${line}\n`);
  };
}

function request(method, route, body, headers) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(body);
    const req = http.request({
      host, port, method, path: API + route, agent,
      headers: Object.assign({ 'content-length': data ? data.length : 0 }, headers || {}),
    }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

function errorDoc(err) {
  const e = err instanceof Error ? err : new Error(typeof err === 'string' ? err : util.inspect(err));
  return {
    errorType: (err instanceof Error ? err.name : undefined) || 'Error',
    errorMessage: e.message,
    trace: String(e.stack || '').split('\n'),
  };
}

class InitError extends Error {
  constructor(type, message) { super(message); this.name = type; }
}

async function loadHandler() {
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const full = process.env._HANDLER || '';
  // As on AWS: the module is the path up to the first dot of the last segment; the rest
  // is the (possibly nested) export.
  const slash = full.lastIndexOf('/') + 1;
  const dot = full.indexOf('.', slash);
  if (dot < 0) throw new InitError('Runtime.MalformedHandlerName', `Bad handler ${full}`);
  const modPath = full.slice(0, dot);
  const exportPath = full.slice(dot + 1).split('.');
  const base = path.resolve(root, modPath);
  const file = ['.js', '.mjs', '.cjs'].map((x) => base + x).find((f) => fs.existsSync(f));
  if (!file) throw new InitError('Runtime.ImportModuleError', `Error: Cannot find module '${modPath}'`);
  let mod;
  try {
    if (file.endsWith('.mjs')) {
      mod = await import(require('url').pathToFileURL(file).href);
    } else {
      try {
        mod = require(file);
      } catch (e) {
        if (e.code !== 'ERR_REQUIRE_ESM') throw e;
        mod = await import(require('url').pathToFileURL(file).href);
      }
    }
  } catch (e) {
    if (e instanceof SyntaxError) throw new InitError('Runtime.UserCodeSyntaxError', `${e.name}: ${e.message}`);
    if (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND') {
      throw new InitError('Runtime.ImportModuleError', `Error: ${e.message}`);
    }
    throw e;
  }
  let fn = mod;
  for (const key of exportPath) fn = fn == null ? undefined : fn[key];
  if (fn === undefined && mod && mod.default) {
    fn = mod.default;
    for (const key of exportPath) fn = fn == null ? undefined : fn[key];
  }
  if (fn === undefined) throw new InitError('Runtime.HandlerNotFound', `${full} is undefined or not exported`);
  if (typeof fn !== 'function') throw new InitError('Runtime.HandlerNotFound', `${full} is not a function`);
  return fn;
}

function makeContext(headers, done) {
  const env = process.env;
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  let clientContext;
  try { clientContext = headers['lambda-runtime-client-context'] ? JSON.parse(headers['lambda-runtime-client-context']) : undefined; } catch (_) { /* ignored */ }
  return {
    callbackWaitsForEmptyEventLoop: true,
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext,
    identity: undefined,
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
    succeed: (result) => done(null, result),
    fail: (err) => done(err == null ? new Error('handled') : err),
    done: (err, result) => done(err, result),
  };
}

// Runs one invocation; resolves with [error, result] however the handler finishes.
function invoke(fn, event, headers) {
  return new Promise((resolve) => {
    let settled = false;
    const done = (err, result) => {
      if (settled) return;
      settled = true;
      resolve([err, result]);
    };
    try {
      const out = fn(event, makeContext(headers, done), done);
      if (out && typeof out.then === 'function') out.then((r) => done(null, r), (e) => done(e == null ? new Error('rejected') : e));
      else if (fn.length < 3) done(null, out);
    } catch (e) {
      done(e);
    }
  });
}

async function main() {
  let fn;
  try {
    fn = await loadHandler();
  } catch (e) {
    const doc = errorDoc(e);
    process.stdout.write(`${new Date().toISOString()}\tundefined\tERROR\t${JSON.stringify(doc)}\n`);
    try {
      await request('POST', '/init/error', JSON.stringify(doc), { 'content-type': 'application/json', 'lambda-runtime-function-error-type': doc.errorType });
    } finally {
      process.exit(1);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, () => poll(fn)));
}

// One poller: take an invocation, run it, answer, forever.
async function poll(fn) {
  for (;;) {
    let next;
    try {
      next = await request('GET', '/invocation/next');
    } catch (e) {
      process.stderr.write(`gust lambda client: failed to get the next invocation: ${e.message}\n`);
      process.exit(1);
    }
    if (next.status !== 200) {
      process.stderr.write(`gust lambda client: /next answered ${next.status}\n`);
      process.exit(1);
    }
    const id = next.headers['lambda-runtime-aws-request-id'];
    await current.run(id, () => answer(fn, id, next));
  }
}

// Runs one invocation and posts its result or error.
async function answer(fn, id, next) {
  if (next.headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'];
  else delete process.env._X_AMZN_TRACE_ID;
  let err;
  let result;
  try {
    const event = next.body.length ? JSON.parse(next.body.toString('utf8')) : {};
    [err, result] = await invoke(fn, event, next.headers);
  } catch (e) {
    err = e;
  }
  let route = `/invocation/${id}/response`;
  let body;
  if (!err) {
    try {
      body = JSON.stringify(result === undefined ? null : result);
    } catch (e) {
      err = new InitError('Runtime.MarshalError', `Unable to stringify response body: ${e.message}`);
    }
  }
  if (err) {
    const doc = errorDoc(err);
    process.stdout.write(`${new Date().toISOString()}\t${id}\tERROR\tInvoke Error \t${JSON.stringify(doc)}\n`);
    route = `/invocation/${id}/error`;
    body = JSON.stringify(doc);
  }
  try {
    await request('POST', route, body, { 'content-type': 'application/json' });
  } catch (e) {
    process.stderr.write(`gust lambda client: the Runtime API failed: ${e.message}\n`);
    process.exit(1);
  }
}

/** Runs the client; `storage` is node.js's AsyncLocalStorage of the current call id. */
exports.run = (storage) => {
  current = storage;
  main();
};
