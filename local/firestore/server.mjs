// Local Firestore API server for tests and the local run (never deployed).
//
// Usage: node local/firestore/server.mjs [port]   (default: $PORT or 8080)
//
// @firestore-emulator/server does not enforce `update_time` write
// preconditions. Real Firestore does, and the product relies on them to let
// exactly one caller claim a meeting's work. This file adds that check at
// start-up, without touching the installed package:
//   - a write with `current_document.update_time` fails with
//     FAILED_PRECONDITION unless the document was last written at exactly
//     that time (or with NOT_FOUND-like failure if it does not exist);
//   - every commit gets a strictly increasing time, so two commits in the
//     same millisecond cannot share an update time (which would let a stale
//     precondition pass).
// The same fix belongs upstream (github.com/YutaUra/firestore-emulator).
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { FirestoreServer, FirestoreState } = require("@firestore-emulator/server");
const { Status } = require("@grpc/grpc-js/build/src/constants");
const { Write } = require("@firestore-emulator/proto/dist/google/firestore/v1/write");

// The server answers an error with its gRPC code only when it is a
// FirestoreEmulatorError, a class the package does not export: take it from
// an error the package raises itself (deleting a missing document that must
// exist).
function emulatorErrorClass() {
  const probe = new FirestoreState();
  const write = Write.fromObject({
    delete: "projects/p/databases/(default)/documents/c/d",
    current_document: { exists: true },
  });
  try {
    probe.writeV1Document(new Date(), write);
  } catch (err) {
    return err.constructor;
  }
  throw new Error("could not find FirestoreEmulatorError");
}
const FirestoreEmulatorError = emulatorErrorClass();

const millis = (t) => Number(t.seconds) * 1000 + Math.floor(Number(t.nanos) / 1e6);

function checkUpdateTime(state, write) {
  const current = write.has_current_document ? write.current_document : null;
  if (!current || !current.has_update_time) return;
  const name = write.has_delete ? write.delete : write.update.name;
  const document = state.getDocument(name);
  const actual = document.metadata.hasExist ? document.metadata.updatedAt.getTime() : null;
  if (actual !== millis(current.update_time)) {
    throw new FirestoreEmulatorError(
      Status.FAILED_PRECONDITION,
      `${name} was changed since it was read (update_time mismatch)`,
    );
  }
}

// One Commit passes the same Date object to each of its writes; a new object
// means a new commit, which gets a time strictly after the previous one.
let lastDate = null;
let lastTime = 0;
const writeV1Document = FirestoreState.prototype.writeV1Document;
FirestoreState.prototype.writeV1Document = function (date, write) {
  if (date !== lastDate) {
    lastTime = Math.max(date.getTime(), lastTime + 1);
    lastDate = date;
  }
  date.setTime(lastTime);
  stats.writes += 1;
  inWrite = true;
  try {
    checkUpdateTime(this, write);
    return writeV1Document.call(this, date, write);
  } finally {
    inWrite = false;
  }
};

// Operation counts for the benchmarks: documents written, documents read
// by key, queries run. Written to $FIRESTORE_STATS_FILE on SIGUSR2.
const stats = { writes: 0, reads: 0, queries: 0 };
let inWrite = false;
const getDocument = FirestoreState.prototype.getDocument;
FirestoreState.prototype.getDocument = function (path) {
  if (!inWrite) stats.reads += 1;
  return getDocument.call(this, path);
};
const v1Query = FirestoreState.prototype.v1Query;
FirestoreState.prototype.v1Query = function (...args) {
  stats.queries += 1;
  return v1Query.apply(this, args);
};
process.on("SIGUSR2", () => {
  if (process.env.FIRESTORE_STATS_FILE) writeFileSync(process.env.FIRESTORE_STATS_FILE, JSON.stringify(stats));
});

const server = new FirestoreServer();
const port = Number(process.argv[2] ?? process.env.PORT ?? 8080);
await server.start(port);
console.log(JSON.stringify({ severity: "INFO", message: `firestore listening on port ${port}` }));

const stop = () => {
  server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
