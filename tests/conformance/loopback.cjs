// Preload (`node --require loopback.cjs ...`): every TCP listen() binds 127.0.0.1 only.
//
// The npm reference servers call `app.listen(PORT)`, which binds every interface. Tests must
// only listen on loopback, so this rewrites the host of every port-based listen() before it
// reaches Node. Unix-socket paths, handles and file descriptors are left alone.
"use strict";

const net = require("node:net");

const LOOPBACK = "127.0.0.1";
const original = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === "number" || (typeof value === "string" && /^\d+$/.test(value));
}

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0];
  if (first === undefined || typeof first === "function") {
    // listen([cb]): an ephemeral port on every interface -> on loopback.
    args = [0, LOOPBACK, ...args.slice(first === undefined ? 1 : 0)];
  } else if (isPort(first)) {
    // listen(port[, host][, backlog][, cb])
    if (args.length > 1 && (typeof args[1] === "string" || args[1] == null)) {
      args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  } else if (
    first !== null &&
    typeof first === "object" &&
    first.path === undefined &&
    first.fd === undefined &&
    first.handle === undefined &&
    first._handle === undefined
  ) {
    // listen(options[, cb]) with a port
    args[0] = { ...first, host: LOOPBACK };
  }
  return original.apply(this, args);
};
