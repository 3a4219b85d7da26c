// jssig: a small engine in JavaScript, for cordon's tests.
//
// It proves that engines built with componentize-js (StarlingMonkey) load,
// scan and are cached like any other. It finds one marker string, the
// setting `marker` (default "JSSIG-MARKER"), in the raw message and in
// each decoded part. Built by `./dev test-engines` (componentize-js, pinned,
// with its default flags: the component imports wasi:http, which cordon
// links to functions that fail).

import { log } from "cordon:scanner/host@0.2.0";

const info = {
  name: "jssig",
  vendor: "cordon tests",
  version: "0.1.0",
  definitionsVersion: "",
  wantsParts: true,
};
let marker = new TextEncoder().encode("JSSIG-MARKER");

function contains(data, needle) {
  outer: for (let i = 0; i + needle.length <= data.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (data[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

function verdict(data, part) {
  const found = contains(data, marker);
  return {
    outcome: found
      ? { tag: "detected", val: [{ name: "Js.Marker", kind: "virus", part }] }
      : { tag: "clean" },
    spamScore: undefined,
    rules: [],
    recipients: [],
    headers: [],
  };
}

export const engine = {
  info() {
    return info;
  },
  init(settings) {
    for (const { key, value } of settings) {
      if (key === "marker") marker = new TextEncoder().encode(value);
      else if (key === "definitions_version") info.definitionsVersion = value;
      else throw `unknown setting ${key}: jssig knows marker, definitions_version`;
    }
    log("info", `jssig: marker of ${marker.length} bytes`);
    return info;
  },
  scan(envelope, message) {
    return verdict(message, "");
  },
  scanPart(envelope, part, content) {
    return verdict(content, part.fileName ?? `part ${part.index}`);
  },
  learn(envelope, message, class_, reference) {
    // jssig learns nothing.
    return "unsupported";
  },
};
