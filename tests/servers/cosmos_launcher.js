#!/usr/bin/env node
/*
 * Launcher for @vercel/cosmosdb-server (pinned to 1.0.1 in package.json), an
 * in-memory server speaking the Cosmos DB SQL REST protocol, for the tests.
 *
 *   node tests/servers/cosmos_launcher.js [PORT]     (or COSMOS_PORT=PORT)
 *
 * PORT defaults to 0, which lets the kernel pick a free port.  It listens on
 * 127.0.0.1 only, over HTTPS with the package's own certificate (self-signed,
 * expired since 2021: clients must skip verification), with HTTP keep-alive
 * ON (upstream sends "Connection: close" unless asked otherwise, which costs a
 * TLS handshake per request: 200 point reads with the Python SDK took 12 s
 * instead of 0.4 s).
 * When it is listening it prints one line to stdout:
 *
 *   cosmosdb-server ready https://127.0.0.1:PORT
 *
 * It exits on SIGTERM/SIGINT, and when its stdin reaches EOF if
 * COSMOS_EXIT_ON_STDIN_EOF=1, so that the server dies with the Python process
 * that started it even if that process is SIGKILLed.
 *
 * Upstream 1.0.1 behaviour checked with the azure-cosmos Python SDK 4.17.1, and
 * what this file patches:
 *
 *  - GET of a missing document (the known bug): upstream's read-document
 *    handler does `data[path]` on the undefined result and answers HTTP 500
 *    "Cannot read properties of undefined (reading 'pk')".  The same happens
 *    when the document exists under another partition key value.  Real Cosmos
 *    answers 404.  PATCHED: the handler is replaced (see readDocument below)
 *    and answers 404 {"code":"NotFound","message":...}.
 *  - The same handler compared the partition key with `data["a/b"]` for a
 *    nested partition key path such as /a/b, so an EXISTING document in such
 *    a container answered 404.  PATCHED in the same replacement.
 *  - Requests for documents of a missing database or container: mostly 404
 *    with an empty body, but a raw POST (create) of a document into a missing
 *    container throws inside the server (collection._rid of undefined) and
 *    answers 500.  (The Python SDK hides that one because it reads the
 *    container first, and gets a 404 there.)  PATCHED: every route with a
 *    :dbId / :collId first checks that they exist and answers 404 NotFound.
 *  - A malformed x-ms-documentdb-partitionkey header (or none, on routes that
 *    need one) makes upstream throw and answer 500.  PATCHED: 400 BadRequest.
 *  - 4xx answers without a Cosmos error body (upstream returns `{}` for 404 of
 *    replace/delete/patch of a missing document, of a missing database or
 *    container, and `{"message":"conflict"}` for an existing database or
 *    container) get "code" filled in (NotFound, Conflict, ...) and a message.
 *    The status codes themselves were already right.
 *  - Already right upstream, verified, NOT patched: create of an existing id
 *    -> 409 Conflict; replace / delete / patch / upsert with a stale If-Match
 *    etag -> 412 PreconditionFailed; replace / delete / patch of a missing
 *    document -> 404; create of an existing database or container -> 409.
 *
 * Not fixed (known limits of the server, not needed by the tests): no auth
 * check (any key is accepted), no TTL, no change feed beyond a stub, only the
 * first component of a hierarchical partition key is used for lookups, and
 * data lives in memory only (gone when the process exits).
 */
"use strict";

const path = require("path");

function pkgLib(rel) {
  return require.resolve(path.posix.join("@vercel/cosmosdb-server/lib", rel), {
    paths: [__dirname, process.cwd()]
  });
}

const STATUS_CODES = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  408: "RequestTimeout",
  409: "Conflict",
  412: "PreconditionFailed",
  413: "RequestEntityTooLarge",
  429: "TooManyRequests",
  449: "RetryWith"
};
const DOC_NOT_FOUND = "Entity with the specified id does not exist in the system.";

function notFound(res, message) {
  res.statusCode = 404;
  return { code: "NotFound", message };
}

function badRequest(res, message) {
  res.statusCode = 400;
  return { code: "BadRequest", message };
}

const { parsePartitionKey } = require(pkgLib("utils/get-partition-from-header"));
const getPartitionFromHeader = require(pkgLib("utils/get-partition-from-header")).default;
const getValue = require(pkgLib("utils/get-value")).default;
const { readOperation } = require(pkgLib("handler/_document-operations"));

/*
 * Replacement for handler/read-document (GET /dbs/:dbId/colls/:collId/docs/:docId).
 * Database and container existence are already checked by wrapHandler.
 */
function readDocument(account, req, res, { dbId, collId, docId }) {
  const collection = account.database(dbId).collection(collId);
  const rawKey = getPartitionFromHeader(req);
  const collPaths = ((collection.read().partitionKey || {}).paths || [])
    .filter(p => p !== "/_partitionKey");
  let clientKeys = [];
  if (rawKey && rawKey !== "[{}]") {
    try {
      clientKeys = JSON.parse(rawKey);
    } catch (err) {
      return badRequest(res, `Failed to parse x-ms-documentdb-partitionkey header: ${rawKey}`);
    }
    if (!Array.isArray(clientKeys)) clientKeys = [clientKeys];
  }
  if (collPaths.length > clientKeys.length) {
    return badRequest(
      res,
      "The partition key supplied in x-ms-partitionkey header has fewer components than defined in the collection"
    );
  }
  const lookupKey = rawKey === undefined ? JSON.stringify([docId]) : rawKey;
  const data = collection.document(docId, parsePartitionKey(lookupKey, docId)).read();
  if (!data) {
    return notFound(res, DOC_NOT_FOUND);
  }
  // The lookup above only uses the first key component; check them all, with
  // nested paths ("/a/b") resolved properly.
  for (let i = 0; i < collPaths.length; i += 1) {
    const value = getValue(collPaths[i].slice(1).split("/"), data);
    if (value !== clientKeys[i]) {
      return notFound(res, DOC_NOT_FOUND);
    }
  }
  const result = readOperation(collection, { partitionKey: lookupKey, id: docId });
  res.statusCode = result.statusCode;
  return result.body;
}

/*
 * Generic wrapper put around every upstream route handler.
 */
function wrapHandler(method, route, handler) {
  return async (account, req, res, params) => {
    if (params && params.dbId !== undefined) {
      const database = account.database(params.dbId);
      if (!database.read()) {
        return notFound(res, `Database '${params.dbId}' does not exist`);
      }
      if (params.collId !== undefined && !database.collection(params.collId).read()) {
        return notFound(res, `Container '${params.collId}' does not exist in database '${params.dbId}'`);
      }
    }
    let body;
    try {
      body = await handler(account, req, res, params);
    } catch (err) {
      if (err && /x-ms-documentdb-partitionkey/.test(String(err.message))) {
        return badRequest(res, err.message);
      }
      throw err; // upstream turns it into a 500 with the message
    }
    if (res.statusCode >= 400 && res.statusCode < 500) {
      if (!body || typeof body !== "object" || Array.isArray(body)) body = {};
      if (!body.code) body.code = STATUS_CODES[res.statusCode] || String(res.statusCode);
      if (!body.message) {
        body.message =
          res.statusCode === 404 ? `Resource Not Found (${method} ${route})` : body.code;
      }
    }
    return body;
  };
}

/*
 * Patch point: lib/routes.js calls `router_1.default(rules)` once, when it is
 * first required, with { METHOD: { "/path/:param": handler } }.  Replacing the
 * router module's default export before anything requires lib/routes lets us
 * wrap every handler without editing node_modules.
 */
const routerModule = require(pkgLib("router"));
if (require.cache[pkgLib("routes")]) {
  throw new Error("cosmos_launcher: lib/routes was loaded before the router could be patched");
}
const originalRouter = routerModule.default;
routerModule.default = rules => {
  const patched = {};
  Object.entries(rules).forEach(([method, routes]) => {
    patched[method] = {};
    Object.entries(routes).forEach(([route, handler]) => {
      let h = handler;
      if (method === "GET" && route === "/dbs/:dbId/colls/:collId/docs/:docId") {
        h = readDocument;
      }
      patched[method][route] = wrapHandler(method, route, h);
    });
  });
  if (!patched.GET || !patched.GET["/dbs/:dbId/colls/:collId/docs/:docId"]) {
    throw new Error("cosmos_launcher: read-document route not found; upstream layout changed");
  }
  return originalRouter(patched);
};

const { createHttpsServer } = require(pkgLib("index"));

const portArg = process.argv[2] !== undefined ? process.argv[2] : process.env.COSMOS_PORT;
const port = portArg === undefined || portArg === "" ? 0 : Number(portArg);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`cosmos_launcher: invalid port ${JSON.stringify(portArg)}`);
  process.exit(2);
}

const server = createHttpsServer({ keepAlive: true });
// Keep idle connections longer than clients usually pool them, so a reused
// socket is rarely closed under the client's feet.
server.keepAliveTimeout = 120 * 1000;
server.headersTimeout = 125 * 1000;

server.on("error", err => {
  console.error(`cosmos_launcher: ${err.message}`);
  process.exit(1);
});

server.listen(port, "127.0.0.1", () => {
  const addr = server.address();
  process.stdout.write(`cosmosdb-server ready https://127.0.0.1:${addr.port}\n`);
});

function shutdown() {
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
if (process.env.COSMOS_EXIT_ON_STDIN_EOF === "1") {
  process.stdin.on("end", shutdown);
  process.stdin.on("error", shutdown);
  process.stdin.resume();
}
