// qapp's race lab page: a plain client of the JSON API, no build step.
//
// The race panel fires N concurrent POST /counter/<strategy> and draws the
// numbers that came back; the session panel drives /session/counter and
// /auth/*; the lab panel fires the two more races of /lab/*. Every API error
// is put into words in the panel's live region.
"use strict";

const MAX_REQUESTS = 500;

const STRATEGIES = {
  "unsafe": "A dict in each worker: read, await, write. Loses updates, and each worker counts alone.",
  "locked": "The same dict under an asyncio.Lock: right inside one worker, but each worker counts alone, so numbers repeat.",
  "shared-unsafe": "The store: get, await, set. Shared by every worker, and still loses updates.",
  "shared-locked": "The store's lock around get and set. Right across workers, and slower.",
  "atomic": "One atomic increment in the store (SQLite UPSERT … RETURNING, Redis INCRBY). Right across workers.",
};

/** Strategies whose counter lives in each worker process. */
const PER_WORKER = new Set(["unsafe", "locked"]);

const STATUS_TEXT = {
  0: "no answer",
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** An API answer that was not a success, in the project's error shape. */
class ApiError extends Error {
  constructor(method, path, status, code, message, retryAfter) {
    super(message);
    this.method = method;
    this.path = path;
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** The status in words, e.g. "503 Service Unavailable". */
  get statusLine() {
    if (this.status === 0) return "no answer";
    return `${this.status} ${STATUS_TEXT[this.status] || "error"}`;
  }

  /** One sentence a person can act on. */
  describe() {
    let text = `${this.method} ${this.path} failed: ${this.statusLine}: ${this.message}`;
    if (this.retryAfter) text += ` Try again in ${this.retryAfter} s.`;
    return text;
  }
}

/**
 * Call the API; resolve with the JSON answer (null for 204), reject with ApiError.
 * `cache` is fetch's cache mode, for a caller that needs it (see the lab panel).
 */
async function api(method, path, body, cache) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (cache) init.cache = cache;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(method, path, 0, "network_error", "the server could not be reached.", null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const code = data && typeof data.error === "string" ? data.error : `http_${response.status}`;
    let message = data && typeof data.message === "string" && data.message
      ? data.message
      : "the server gave no details";
    if (!/[.!?]$/.test(message)) message += ".";
    throw new ApiError(method, path, response.status, code, message, response.headers.get("Retry-After"));
  }
  if (response.status === 204) return null;
  if (data === null) {
    throw new ApiError(method, path, response.status, "bad_answer", "the answer was not JSON.", null);
  }
  return data;
}

/** Put a message in a live region; kind is "ok", "error" or "busy". */
function say(element, text, kind) {
  element.textContent = text;
  element.dataset.kind = kind;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** "1, 4–9, 12" for a sorted list of integers. */
function ranges(numbers) {
  const parts = [];
  let start = null;
  let prev = null;
  for (const n of numbers) {
    if (start !== null && n === prev + 1) {
      prev = n;
      continue;
    }
    if (start !== null) parts.push(start === prev ? `${start}` : `${start}–${prev}`);
    start = n;
    prev = n;
  }
  if (start !== null) parts.push(start === prev ? `${start}` : `${start}–${prev}`);
  return parts.join(", ");
}

// ---------------------------------------------------------------- race panel

/** The main store's kind ("sqlite", "redis", "memory"), from /health. */
let storeName = null;

/** "Never handed out (5): 71–75", per worker where each worker counts alone. */
function missingText(result) {
  if (!result.answered) return "";
  const { missing } = result;
  if (!missing.length) return "Never handed out: none. Every counter gave out each of its numbers.";
  const byCounter = new Map();
  for (const { value, counter } of missing) {
    if (!byCounter.has(counter)) byCounter.set(counter, []);
    byCounter.get(counter).push(value);
  }
  const parts = [...byCounter].map(([counter, values]) => {
    const list = ranges(values.sort((a, b) => a - b));
    return counter === "shared" ? list : `worker ${counter}: ${list}`;
  });
  return `Never handed out (${missing.length}): ${parts.join("; ")}`;
}

/**
 * What a run's answers say, counted exactly as `qapp race` counts them.
 *
 * A counter is what an increment changes: each worker's own for the
 * per-worker strategies (every strategy on a memory:// store), else the
 * store's one. repeated = answers - distinct numbers. lost = answers - how far
 * the counters moved, where a counter moved from one below the lowest number
 * it handed out to its value after the run (`finals`, read with GET; its
 * highest number where it could not be read). The numbers a counter should
 * have handed out but did not are listed as never handed out.
 */
function analyse(answers, sent, perWorker, finals) {
  const byValue = new Map(); // number -> pids that handed it out
  const byCounter = new Map(); // pid, or "shared" -> its numbers
  for (const { value, worker } of answers) {
    if (!byValue.has(value)) byValue.set(value, []);
    byValue.get(value).push(worker);
    const counter = perWorker ? worker : "shared";
    if (!byCounter.has(counter)) byCounter.set(counter, []);
    byCounter.get(counter).push(value);
  }
  let moved = 0;
  const missing = []; // { value, counter }
  for (const [counter, numbers] of byCounter) {
    const before = Math.min(...numbers) - 1;
    const after = finals.has(counter) ? finals.get(counter) : Math.max(...numbers);
    moved += after - before;
    const handed = new Set(numbers);
    for (let n = before + 1; n <= before + numbers.length; n++) {
      if (!handed.has(n)) missing.push({ value: n, counter });
    }
  }
  const values = [...byValue.keys()].sort((a, b) => a - b);
  const workers = [...new Set(answers.map((a) => a.worker))].sort((a, b) => a - b);
  return {
    sent,
    answered: answers.length,
    failed: sent - answers.length,
    distinct: values.length,
    lost: answers.length - moved,
    repeated: answers.length - values.length,
    workers,
    byValue,
    values,
    missing,
    perWorker,
  };
}

/**
 * Each counter's value after the run, read with GET: the store's one, or
 * each answering worker's own. The browser sends the GETs over the
 * connections it used for the run, so they reach the same workers; a worker
 * that none of them reaches is left out, and counted from its highest number.
 */
async function readFinals(path, perWorker, workers) {
  const finals = new Map();
  const tries = perWorker ? 3 * workers.length : 1;
  const answers = await Promise.all(
    Array.from({ length: tries }, () => api("GET", path).catch((error) => ({ error }))),
  );
  let error = null;
  for (const data of answers) {
    if (data && data.error instanceof ApiError) {
      error = data.error;
    } else if (data && Number.isInteger(data.value) && Number.isInteger(data.worker)) {
      finals.set(perWorker ? data.worker : "shared", data.value);
    }
  }
  return { finals, error };
}

/** Group failed requests by what went wrong: "503 Service Unavailable ×12: …". */
function describeFailures(errors, sent) {
  const groups = new Map();
  for (const err of errors) {
    const key = `${err.statusLine}|${err.message}`;
    const group = groups.get(key) || { err, count: 0 };
    group.count += 1;
    groups.set(key, group);
  }
  const parts = [...groups.values()].map(({ err, count }) => {
    let text = `${err.statusLine} ×${count}: ${err.message}`;
    if (err.retryAfter) text += ` Try again in ${err.retryAfter} s.`;
    return text;
  });
  return `${errors.length} of ${sent} requests failed. ${parts.join(" ")}`;
}

function initRace() {
  const form = document.getElementById("race-form");
  const strategy = document.getElementById("strategy");
  const count = document.getElementById("count");
  const fire = document.getElementById("fire");
  const reset = document.getElementById("race-reset");
  const help = document.getElementById("strategy-help");
  const message = document.getElementById("race-message");
  const summary = document.getElementById("race-summary");
  const legend = document.getElementById("race-legend");
  const grid = document.getElementById("race-grid");
  const missingList = document.getElementById("race-missing");

  const showHelp = () => {
    help.textContent = STRATEGIES[strategy.value] || "";
  };
  strategy.addEventListener("change", showHelp);
  showHelp();

  const storeNote = document.getElementById("race-store");
  api("GET", "/health").then(
    (data) => {
      storeName = data.store;
      storeNote.textContent = data.warning
        ? `Store: ${data.store}. Warning: ${data.warning}.`
        : `Store: ${data.store}, shared by every worker.`;
    },
    (err) => {
      storeNote.textContent = `The store may be down: ${err.describe()}`;
    },
  );

  // While a run is out, Fire and Reset say so but keep their focus: a
  // disabled button would drop the keyboard user's place on the page.
  let running = false;
  const busy = (on) => {
    running = on;
    for (const button of [fire, reset]) button.setAttribute("aria-disabled", on ? "true" : "false");
    grid.setAttribute("aria-busy", on ? "true" : "false");
  };

  const clear = () => {
    legend.replaceChildren();
    grid.replaceChildren();
    missingList.textContent = "";
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (running) return;
    const n = Number(count.value);
    if (!Number.isInteger(n) || n < 1 || n > MAX_REQUESTS) {
      count.setAttribute("aria-invalid", "true");
      say(message, `Requests must be a whole number from 1 to ${MAX_REQUESTS}.`, "error");
      count.focus();
      return;
    }
    count.removeAttribute("aria-invalid");
    const name = strategy.value;
    const path = `/counter/${encodeURIComponent(name)}`;
    busy(true);
    clear();
    summary.dataset.state = "running";
    say(message, `Firing ${plural(n, "request", "requests")} at ${name}…`, "busy");

    const started = performance.now();
    // All at once: the browser queues what it cannot send yet, and the
    // server sees as many in flight as the browser allows.
    const outcomes = await Promise.all(
      Array.from({ length: n }, () => api("POST", path).then(
        (data) => ({ data }),
        (error) => ({ error }),
      )),
    );
    const ms = Math.round(performance.now() - started);

    const answers = [];
    const errors = [];
    for (const outcome of outcomes) {
      const data = outcome.data;
      if (outcome.error) {
        errors.push(outcome.error);
      } else if (data && Number.isInteger(data.value) && Number.isInteger(data.worker)) {
        answers.push({ value: data.value, worker: data.worker });
      } else {
        errors.push(new ApiError("POST", path, 200, "bad_answer", "the answer had no number.", null));
      }
    }
    const perWorker = PER_WORKER.has(name) || storeName === "memory";
    const workers = [...new Set(answers.map((a) => a.worker))];
    const { finals, error: finalError } = answers.length
      ? await readFinals(path, perWorker, workers)
      : { finals: new Map(), error: null };
    const result = analyse(answers, n, perWorker, finals);
    draw(result, ms, name);
    if (finalError) errors.push(finalError);
    if (errors.length) {
      say(message, describeFailures(errors, n), "error");
    } else if (result.workers.length === 1 && PER_WORKER.has(name)) {
      say(message, `Done, but only one worker answered: the browser sent every request over`
        + ` connections that one worker had accepted, so ${name}'s counters never met.`
        + ` Press Fire again to spread the load.`, "ok");
    } else {
      // The summary is a live region of its own and says it all.
      say(message, "", "ok");
    }
    busy(false);
  });

  reset.addEventListener("click", async () => {
    if (running) return;
    const name = strategy.value;
    busy(true);
    try {
      const data = await api("DELETE", `/counter/${encodeURIComponent(name)}`);
      clear();
      summary.dataset.state = "idle";
      summary.textContent = "Counter reset. Press Fire to run again.";
      const value = data && Number.isInteger(data.value) ? data.value : 0;
      if (data && data.scope === "worker") {
        say(message, `Reset ${name} to ${value} in worker ${data.worker} only: each other worker keeps its own count.`, "ok");
      } else {
        say(message, `Reset the shared ${name} counter to ${value}.`, "ok");
      }
    } catch (err) {
      say(message, err instanceof ApiError ? err.describe() : String(err), "error");
    } finally {
      busy(false);
    }
  });

  function draw(result, ms, name) {
    const { sent, failed, distinct, lost, repeated, workers } = result;
    Object.assign(summary.dataset, {
      state: "done",
      strategy: name,
      sent: String(sent),
      answered: String(result.answered),
      failed: String(failed),
      distinct: String(distinct),
      lost: String(lost),
      repeated: String(repeated),
      workers: String(workers.length),
      ms: String(ms),
    });
    let text = `${name}: sent ${sent} · distinct ${distinct} · lost ${lost} · repeated ${repeated}`
      + ` · workers ${workers.length} · ${ms} ms`;
    if (failed) text += ` · failed ${failed}`;
    summary.textContent = text;

    // One colour per worker, in pid order; the legend names them.
    const colour = new Map(workers.map((pid, i) => [pid, i % 8]));
    const perWorker = new Map();
    const items = [];
    for (const pid of workers) perWorker.set(pid, 0);
    for (const value of result.values) {
      // Repeats of one number sit together, in worker order.
      const owners = [...result.byValue.get(value)].sort((a, b) => a - b);
      for (const pid of owners) {
        perWorker.set(pid, perWorker.get(pid) + 1);
        items.push({ value, pid, times: owners.length });
      }
    }
    const fragment = document.createDocumentFragment();
    // Numbers in order, with the ones never handed out as dashed slots where they belong.
    const ordered = [
      ...items.map((item) => ({ ...item, missing: false })),
      ...result.missing.map(({ value, counter }) => ({ value, counter, missing: true })),
    ].sort((a, b) => a.value - b.value || Number(a.missing) - Number(b.missing));
    for (const item of ordered) {
      const cell = document.createElement("li");
      cell.textContent = String(item.value);
      if (item.missing) {
        cell.className = "cell missing";
        cell.title = item.counter === "shared"
          ? `${item.value}: never handed out`
          : `${item.value}: worker ${item.counter}'s counter never handed it out`;
      } else {
        cell.className = `cell w${colour.get(item.pid)}`;
        cell.dataset.worker = String(item.pid);
        if (item.times > 1) {
          cell.classList.add("repeated");
          cell.dataset.times = String(item.times);
          cell.title = `${item.value}: handed out ${item.times} times; this one by worker ${item.pid}`;
        } else {
          cell.title = `${item.value}: worker ${item.pid}`;
        }
      }
      fragment.append(cell);
    }
    grid.replaceChildren(fragment);

    const keys = document.createDocumentFragment();
    for (const pid of workers) {
      const key = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch w${colour.get(pid)}`;
      swatch.setAttribute("aria-hidden", "true");
      key.append(swatch, `worker ${pid}: ${plural(perWorker.get(pid), "answer", "answers")}`);
      keys.append(key);
    }
    if (repeated) {
      const key = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch repeated";
      swatch.setAttribute("aria-hidden", "true");
      key.append(swatch, "red outline, ×n: repeated number");
      keys.append(key);
    }
    if (result.missing.length) {
      const key = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch missing";
      swatch.setAttribute("aria-hidden", "true");
      key.append(swatch, "dashed: never handed out by its counter");
      keys.append(key);
    }
    legend.replaceChildren(keys);

    missingList.textContent = missingText(result);
  }
}

// ------------------------------------------------------------- session panel

function initSession() {
  const counter = document.getElementById("session-counter");
  const whoami = document.getElementById("whoami");
  const message = document.getElementById("session-message");
  const form = document.getElementById("auth-form");
  const username = document.getElementById("username");
  const password = document.getElementById("password");
  const logout = document.getElementById("logout");
  const buttons = {
    "inc": document.getElementById("session-inc"),
    "dec": document.getElementById("session-dec"),
    "reset": document.getElementById("session-reset"),
  };

  // Answers can overtake one another: show one only if it is newer than the shown one.
  let asked = 0;
  let shown = 0;
  const counterRequest = async (method, path) => {
    const mine = ++asked;
    const data = await api(method, path);
    if (mine > shown) {
      shown = mine;
      showCounter(data);
    }
  };

  const showCounter = (data) => {
    if (data && Number.isInteger(data.counter)) {
      counter.textContent = String(data.counter);
      counter.dataset.value = String(data.counter);
    }
  };

  const showUser = (name) => {
    whoami.dataset.username = name || "";
    whoami.textContent = name ? `Logged in as ${name}.` : "Not logged in.";
    logout.hidden = !name;
  };

  const fail = (err) => say(message, err instanceof ApiError ? err.describe() : String(err), "error");

  async function refreshCounter() {
    try {
      await counterRequest("GET", "/session/counter");
    } catch (err) {
      fail(err);
    }
  }

  async function refreshUser() {
    try {
      const data = await api("GET", "/auth/me");
      showUser(data && typeof data.username === "string" ? data.username : "");
    } catch (err) {
      // 401 is the answer "nobody", not a failure.
      if (err instanceof ApiError && err.status === 401) {
        showUser("");
      } else {
        whoami.textContent = "Unknown: the server did not say.";
        fail(err);
      }
    }
  }

  for (const [action, button] of Object.entries(buttons)) {
    // Never disabled while a request is out: the server counts concurrent
    // presses exactly, and a disabled button would lose the keyboard focus.
    button.addEventListener("click", async () => {
      try {
        await counterRequest("POST", `/session/counter/${action}`);
        say(message, `Session counter: ${counter.textContent}.`, "ok");
      } catch (err) {
        fail(err);
      }
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter && event.submitter.value === "register" ? "register" : "login";
    const name = username.value.trim();
    if (!name || !password.value) {
      say(message, "Enter a username and a password.", "error");
      (name ? password : username).focus();
      return;
    }
    const body = { username: name, password: password.value };
    try {
      if (action === "register") {
        await api("POST", "/auth/register", body);
        say(message, `Registered ${name}. Press Log in to log in.`, "ok");
        return;
      }
      await api("POST", "/auth/login", body);
      password.value = "";
      say(message, `Logged in as ${name}.`, "ok");
    } catch (err) {
      fail(err);
    }
    await refreshUser();
    await refreshCounter();
  });

  logout.addEventListener("click", async () => {
    try {
      await api("POST", "/auth/logout");
      say(message, "Logged out.", "ok");
      // The button hides itself; keep the keyboard user in the form.
      username.focus();
    } catch (err) {
      fail(err);
    }
    await refreshUser();
    await refreshCounter();
  });

  refreshCounter();
  refreshUser();
}

// ---------------------------------------------------------------- lab panel

const LAB_RACES = {
  "sessions/naive": "A counter in the session dict, the Flask-Session way: each request loads the whole dict, adds one and writes the whole dict back, over what the others wrote.",
  "sessions/atomic": "session.incr: one atomic increment in the session store. Every increment counts.",
  "stampede/naive": "Cache-aside: get, and on a miss compute (half a second) and set. Every request that misses computes.",
  "stampede/cached": "qapp's cached: one request of all, on any worker, computes; the others wait for its value.",
};

/** A key nobody has read yet, so that the stampede starts cold. */
function coldKey() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return `page-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function initLab() {
  const form = document.getElementById("lab-form");
  const choice = document.getElementById("lab-row");
  const count = document.getElementById("lab-count");
  const fire = document.getElementById("lab-fire");
  const help = document.getElementById("lab-help");
  const message = document.getElementById("lab-message");
  const summary = document.getElementById("lab-summary");

  const showHelp = () => {
    help.textContent = LAB_RACES[choice.value] || "";
  };
  choice.addEventListener("change", showHelp);
  showHelp();

  let running = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (running) return;
    const n = Number(count.value);
    if (!Number.isInteger(n) || n < 1 || n > MAX_REQUESTS) {
      count.setAttribute("aria-invalid", "true");
      say(message, `Requests must be a whole number from 1 to ${MAX_REQUESTS}.`, "error");
      count.focus();
      return;
    }
    count.removeAttribute("aria-invalid");
    const [row, strategy] = choice.value.split("/");
    running = true;
    fire.setAttribute("aria-disabled", "true");
    summary.dataset.state = "running";
    say(message, `Firing ${plural(n, "request", "requests")} at ${choice.value}…`, "busy");
    try {
      let path;
      if (row === "sessions") {
        // Both counters at 0, and a session (and cookie) for a browser without one.
        await api("POST", "/lab/session/reset");
        path = `/lab/session/${strategy}`;
      } else {
        path = `/lab/stampede/${strategy}/${coldKey()}`;
      }
      const method = row === "sessions" ? "POST" : "GET";
      const started = performance.now();
      // no-store: the browser's HTTP cache lets only one GET of a URL out at a
      // time, which would queue the stampede in the browser, not the server.
      const outcomes = await Promise.all(
        Array.from({ length: n }, () => api(method, path, undefined, "no-store").then(
          (data) => ({ data }),
          (error) => ({ error }),
        )),
      );
      const ms = Math.round(performance.now() - started);
      const answers = outcomes.filter((o) => o.data && Number.isInteger(o.data.worker));
      const errors = outcomes.filter((o) => o.error).map((o) => o.error);
      let counted;
      let wrong;
      if (row === "sessions") {
        const counts = await api("GET", "/lab/session");
        counted = counts[strategy];
        wrong = answers.length - counted;
      } else {
        const data = await api("GET", `${path}/computations`);
        counted = data.computations;
        wrong = Math.max(counted - 1, 0);
      }
      const workers = new Set(answers.map((o) => o.data.worker)).size;
      Object.assign(summary.dataset, {
        state: "done",
        row,
        strategy,
        sent: String(n),
        answered: String(answers.length),
        failed: String(n - answers.length),
        counted: String(counted),
        wrong: String(wrong),
        workers: String(workers),
        ms: String(ms),
      });
      const [countedWord, wrongWord] = row === "sessions" ? ["moved", "lost"] : ["computed", "recomputed"];
      let text = `${choice.options[choice.selectedIndex].text}: sent ${n} · ${countedWord} ${counted}`
        + ` · ${wrongWord} ${wrong} · workers ${workers} · ${ms} ms`;
      if (n - answers.length) text += ` · failed ${n - answers.length}`;
      summary.textContent = text;
      say(message, errors.length ? describeFailures(errors, n) : "", errors.length ? "error" : "ok");
    } catch (err) {
      summary.dataset.state = "idle";
      say(message, err instanceof ApiError ? err.describe() : String(err), "error");
    } finally {
      running = false;
      fire.setAttribute("aria-disabled", "false");
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  initRace();
  initSession();
  initLab();
});
