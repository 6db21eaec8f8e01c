// Server-Sent Events read with fetch() instead of EventSource: EventSource cannot send the
// Authorization header, and the admin key must never travel in a URL (URLs end up in logs).

const STALL_MS = 45_000; // the admin API pings every 15 s: a stream this quiet is dead

// Server-Sent Events over fetch(): yields {event, data, id} until the body ends.
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let skipLF = false; // a CR ended the last chunk: a LF opening the next one belongs to it
  let event = "", data = [], id = null;
  const out = [];
  const line = (text) => {
    if (text === "") {
      if (data.length) out.push({ event: event || "message", data: data.join("\n"), id });
      event = ""; data = []; id = null;
      return;
    }
    if (text.startsWith(":")) return; // a comment: the keep-alive ping
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      let chunk = value;
      if (skipLF && chunk.startsWith("\n")) chunk = chunk.slice(1);
      skipLF = false;
      buffer += chunk;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== "\n" && c !== "\r") continue;
        line(buffer.slice(start, i));
        if (c === "\r") {
          if (i + 1 < buffer.length) {
            if (buffer[i + 1] === "\n") i++;
          } else {
            skipLF = true;
          }
        }
        start = i + 1;
      }
      buffer = buffer.slice(start);
      yield* out.splice(0);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// Follows an SSE endpoint until `signal` aborts, reconnecting with backoff. `resume` sends the last
// event id back (the event log resumes from it); otherwise `onOpen` lets the caller reset its view.
// `headers()` is asked on every attempt; a 401 ends it all through `onUnauthorized`, and another
// refusal becomes `failure(response)` handed to `onDown`.
export async function follow(url, options) {
  const { headers, failure, signal, onEvent, onOpen, onDown, onUnauthorized, resume = false } = options;
  let delay = 1000;
  let lastId = null;
  while (!signal.aborted) {
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    signal.addEventListener("abort", abort, { once: true });
    let stall = 0;
    const watch = () => {
      clearTimeout(stall);
      stall = setTimeout(() => attempt.abort(), STALL_MS);
    };
    try {
      const extra = { Accept: "text/event-stream" };
      if (resume && lastId) extra["Last-Event-ID"] = lastId;
      watch();
      const response = await fetch(url, { headers: headers(extra), cache: "no-store", signal: attempt.signal });
      if (response.status === 401) {
        onUnauthorized();
        return;
      }
      if (!response.ok) throw await failure(response);
      delay = 1000;
      onOpen?.();
      for await (const message of sseEvents(response.body)) {
        watch();
        if (message.id) lastId = message.id;
        if (onEvent(message) === false) return; // the stream said it is over for good
      }
      onDown?.(new Error("the stream ended"));
    } catch (error) {
      if (signal.aborted) return;
      onDown?.(error);
    } finally {
      clearTimeout(stall);
      signal.removeEventListener("abort", abort);
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 30_000);
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

