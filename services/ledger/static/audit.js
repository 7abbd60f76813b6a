// The audit page's inclusion check, done entirely in the visitor's browser with WebCrypto.
//
// Given an entry number, fetch the entry's stored bytes and its RFC 9162 inclusion proof from this node,
// hash the entry (leaf = SHA-256(0x00 || bytes)), fold the proof (node = SHA-256(0x01 || left || right)),
// and compare the result with the root of the signed checkpoint shown on the page, whose Ed25519 signature
// is checked against the network's verifier key (C2SP signed-note). All URLs are relative, so the page
// also works when the ledger is mounted under a prefix.
"use strict";

const utf8 = new TextEncoder();

function fromBase64(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

class CheckError extends Error {}

// --- the signed checkpoint (C2SP tlog-checkpoint in a signed note) ---------------------------------------

function parseNote(text) {
  const cut = text.lastIndexOf("\n\n");
  if (cut < 0) throw new CheckError("the checkpoint has no signature lines");
  const body = text.slice(0, cut + 1);
  const [origin, sizeText, rootText] = body.slice(0, -1).split("\n");
  if (!/^(0|[1-9][0-9]*)$/.test(sizeText || "")) throw new CheckError("the checkpoint's size line is malformed");
  const root = fromBase64(rootText || "");
  if (root.length !== 32) throw new CheckError("the checkpoint's root hash is not 32 bytes");
  const signatures = text
    .slice(cut + 2)
    .replace(/\n$/, "")
    .split("\n")
    .map((line) => {
      const match = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
      if (!match) throw new CheckError("a signature line of the checkpoint is malformed");
      const raw = fromBase64(match[2]);
      return { name: match[1], keyId: toHex(raw.subarray(0, 4)), signature: raw.subarray(4) };
    });
  return { body, origin, size: BigInt(sizeText), root, signatures };
}

// A verifier key text: <name>+<key id, 8 hex>+<base64(0x01 || 32-byte Ed25519 public key)>.
async function parseVerifierKey(text) {
  const first = text.indexOf("+");
  const second = text.indexOf("+", first + 1);
  if (first < 1 || second < 0) throw new CheckError("the network's verifier key is malformed");
  const name = text.slice(0, first);
  const keyId = text.slice(first + 1, second).toLowerCase();
  const raw = fromBase64(text.slice(second + 1));
  if (raw.length !== 33 || raw[0] !== 0x01) throw new CheckError("the network's verifier key is not an Ed25519 key");
  const publicKey = raw.subarray(1);
  const expected = toHex((await sha256(utf8.encode(name), Uint8Array.of(0x0a, 0x01), publicKey)).subarray(0, 4));
  if (expected !== keyId) throw new CheckError("the network's verifier key id does not match its key");
  return { name, keyId, publicKey };
}

// Returns {state: "pass" | "fail" | "unchecked", text}.
async function checkSignature(checkpoint, key) {
  const line = checkpoint.signatures.find((s) => s.name === key.name && s.keyId === key.keyId);
  if (!line) return { state: "fail", text: `the checkpoint carries no signature by ${key.name} (key id ${key.keyId})` };
  let cryptoKey;
  try {
    cryptoKey = await crypto.subtle.importKey("raw", key.publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (error) {
    if (error && error.name === "NotSupportedError") {
      return { state: "unchecked", text: "signature not checked in this browser (its WebCrypto has no Ed25519)" };
    }
    return { state: "fail", text: `the network's key could not be loaded (${error})` };
  }
  const valid =
    line.signature.length === 64 &&
    (await crypto.subtle.verify({ name: "Ed25519" }, cryptoKey, line.signature, utf8.encode(checkpoint.body)));
  return valid
    ? { state: "pass", text: `the checkpoint's Ed25519 signature by ${key.name} (key id ${key.keyId}) is valid` }
    : { state: "fail", text: `the checkpoint's signature by ${key.name} (key id ${key.keyId}) is NOT valid` };
}

// --- the inclusion proof (RFC 9162, section 2.1.3.2) -----------------------------------------------------

async function rootFromInclusionProof(index, size, leaf, proof) {
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) return null; // the proof is longer than the tree is deep
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(Uint8Array.of(0x01), p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await sha256(Uint8Array.of(0x01), r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

async function fetchJson(url) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch (error) {
    throw new CheckError(`could not reach the node (${error})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail ? `: ${body.detail}` : "";
    throw new CheckError(`the node answered ${url} with HTTP ${response.status}${detail}`);
  }
  if (body === null) throw new CheckError(`the node's answer to ${url} is not JSON`);
  return body;
}

function decodeBase64Field(value, what) {
  try {
    return fromBase64(String(value));
  } catch {
    throw new CheckError(`${what} is not base64`);
  }
}

// --- what the visitor sees -------------------------------------------------------------------------------

function hours(minutes) {
  const h = Math.floor(Math.abs(minutes) / 60);
  const m = Math.abs(minutes) % 60;
  return [h ? `${h} h` : "", m ? `${m} min` : ""].filter(Boolean).join(" ") || "0 min";
}

function describeEntry(entry) {
  switch (entry.type) {
    case "ledger.transfer.v1": {
      const what = entry.reverses ? ` (reverses ${entry.reverses})` : "";
      return `Transfer of ${entry.minutes} minutes (${hours(entry.minutes)}) from ${entry.payer} to ${entry.payee}${what}`;
    }
    case "ledger.account.opened.v1":
      return `Account ${entry.account} opened (${entry.kind}, floor ${entry.floor} minutes)`;
    case "ledger.account.limits.v1":
      return `Limits of ${entry.account} changed (floor ${entry.floor} minutes)`;
    case "ledger.account.closed.v1":
      return `Account ${entry.account} closed`;
    default:
      return `Entry of type ${entry.type}`;
  }
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function code(text) {
  return element("code", { class: "hash" }, text);
}

const MARKS = { pass: "✓", fail: "✗", unchecked: "?", info: "·" };

function showResult(result, { verdict, summary, checks, entryText, entryJson, bundle }) {
  const heading = {
    pass: "Verified",
    unchecked: "Included, signature not checked",
    fail: "Verification failed",
    impossible: "Not checked",
  }[verdict];
  const parts = [element("h3", { id: "verdict", class: `verdict ${verdict}` }, heading), element("p", {}, summary)];
  if (checks.length) {
    parts.push(
      element(
        "ul",
        { class: "checks" },
        ...checks.map((c) =>
          element("li", { class: c.state }, element("span", { "aria-hidden": "true" }, MARKS[c.state] + " "), ...[c.text].flat()),
        ),
      ),
    );
  }
  if (entryText !== undefined) {
    parts.push(element("h4", {}, verdict === "fail" ? "The entry as the node served it (not verified)" : "The entry"));
    if (entryJson) parts.push(element("p", { id: "entry-summary" }, describeEntry(entryJson)));
    parts.push(element("pre", { id: "entry-json" }, entryText));
  }
  if (bundle) {
    parts.push(
      element(
        "p",
        {},
        element("a", { href: bundle.href, download: bundle.file, id: "bundle-link" }, "Download the proof bundle"),
        ` (${bundle.file}, C2SP tlog-proof: keep it and verify it offline later)`,
      ),
    );
  }
  result.replaceChildren(...parts);
}

async function checkEntry(indexText, result) {
  result.replaceChildren(element("p", {}, `Checking entry ${indexText}…`));
  if (!window.crypto || !crypto.subtle) {
    showResult(result, {
      verdict: "impossible",
      summary:
        "Not checked: browsers only offer their cryptography (WebCrypto) to pages served over HTTPS or from " +
        "localhost. Open this page over HTTPS, or use timebank audit.",
      checks: [],
    });
    return;
  }
  const checks = [];
  let entryText;
  let entryJson;
  let bundle;
  try {
    if (!/^[0-9]+$/.test(indexText)) throw new CheckError("the entry number must be a whole number");
    const index = BigInt(indexText);
    const checkpoint = parseNote(document.getElementById("checkpoint-note").textContent);
    const key = await parseVerifierKey(document.getElementById("vkey").textContent.trim());
    if (index >= checkpoint.size) {
      throw new CheckError(`entry ${index} is not covered by this checkpoint (it has ${checkpoint.size} entries)`);
    }
    bundle = { href: `log/proof/bundle?index=${index}`, file: `entry-${index}.tlog-proof` };

    const signature = await checkSignature(checkpoint, key);
    checks.push(signature);

    const page = await fetchJson(`log/entries?start=${index}&end=${index + 1n}`);
    const entry = Array.isArray(page.entries) ? page.entries.find((e) => String(e.index) === String(index)) : null;
    if (!entry) throw new CheckError(`the node did not return entry ${index}`);
    const bytes = decodeBase64Field(entry.data, "the entry");
    entryText = new TextDecoder("utf-8").decode(bytes);
    try {
      entryJson = JSON.parse(entryText);
      entryText = JSON.stringify(entryJson, null, 2);
    } catch {
      entryJson = null;
    }

    const answer = await fetchJson(`log/proof/inclusion?index=${index}&size=${checkpoint.size}`);
    if (!Array.isArray(answer.proof)) throw new CheckError("the node's inclusion proof has no hashes");
    const proof = answer.proof.map((h) => decodeBase64Field(h, "a proof hash"));
    if (proof.some((h) => h.length !== 32)) throw new CheckError("a proof hash is not 32 bytes");

    const leaf = await sha256(Uint8Array.of(0x00), bytes);
    checks.push({ state: "info", text: ["the entry hashes to ", code(toBase64(leaf)), " (SHA-256 of 0x00 and its bytes)"] });
    const root = await rootFromInclusionProof(index, checkpoint.size, leaf, proof);
    if (root !== null && sameBytes(root, checkpoint.root)) {
      checks.push({
        state: "pass",
        text: [`the ${proof.length} proof hashes fold the entry up to the checkpoint's root `, code(toBase64(checkpoint.root))],
      });
    } else {
      const got = root === null ? "nothing (the proof has the wrong length)" : code(toBase64(root));
      checks.push({
        state: "fail",
        text: ["the proof folds the entry up to ", got, ", not the checkpoint's root ", code(toBase64(checkpoint.root))],
      });
    }
  } catch (error) {
    if (!(error instanceof CheckError)) console.error(error);
    checks.push({ state: "fail", text: error instanceof CheckError ? error.message : `unexpected error: ${error}` });
  }

  const states = checks.map((c) => c.state);
  const verdict = states.includes("fail") ? "fail" : states.includes("unchecked") ? "unchecked" : "pass";
  const summary = {
    pass: `Entry ${indexText} is in this log, under the checkpoint signed by the network's key.`,
    unchecked:
      `Entry ${indexText} is in the tree whose root the checkpoint shows, but this browser cannot check the ` +
      "checkpoint's signature, so the root itself is not authenticated here.",
    fail: `Entry ${indexText} could not be shown to be in this log under the signed checkpoint.`,
  }[verdict];
  showResult(result, { verdict, summary, checks, entryText, entryJson, bundle });
}

function start() {
  const form = document.getElementById("check-form");
  if (!form) return;
  const input = document.getElementById("entry-index");
  const result = document.getElementById("result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const index = input.value.trim();
    const url = new URL(location.href);
    url.searchParams.set("index", index);
    history.replaceState(null, "", url);
    checkEntry(index, result);
  });
  // A link such as audit?index=12 checks that entry straight away.
  const asked = new URLSearchParams(location.search).get("index");
  if (asked !== null) {
    input.value = asked;
    checkEntry(asked.trim(), result);
  }
}

start();
