// Validates an AsyncAPI document with the official parser, as an integrator's tooling would read it.
//
//   node tests/node/validate-asyncapi.mjs docs/asyncapi.json
//   node tests/node/validate-asyncapi.mjs http://127.0.0.1:8001/asyncapi.json
//
// Prints one JSON object: {source, errors, warnings, diagnostics: [{severity, code, message,
// path}]}. Exits 0 only when there is no error and no warning, 1 otherwise, 2 when the document
// cannot be read. `parse` (not only `validate`) so the payload schemas are parsed too.
// A `$ref` to anything but this document is reported as an error and never fetched: the document
// must stand alone (integrators read it offline, and CI reaches no host but package registries).

import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const SEVERITIES = ["error", "warning", "info", "hint"];

async function read(source) {
  if (/^https?:\/\//.test(source)) {
    const response = await fetch(source);
    if (!response.ok) {
      throw new Error(`GET ${source} answered ${response.status}`);
    }
    return response.text();
  }
  return readFile(source, "utf8");
}

function externalRefs(node, path = []) {
  if (Array.isArray(node)) {
    return node.flatMap((item, index) => externalRefs(item, [...path, index]));
  }
  if (node === null || typeof node !== "object") {
    return [];
  }
  return Object.entries(node).flatMap(([key, value]) =>
    key === "$ref" && typeof value === "string" && !value.startsWith("#")
      ? [
          {
            severity: "error",
            code: "external-ref",
            message: `$ref ${value} points outside the document`,
            path,
          },
        ]
      : externalRefs(value, [...path, key]),
  );
}

async function main(source) {
  if (!source) {
    console.error("usage: node validate-asyncapi.mjs <file or http(s) URL>");
    return 2;
  }
  let text;
  try {
    text = await read(source);
  } catch (error) {
    console.error(`cannot read ${source}: ${error.message}`);
    return 2;
  }
  let diagnostics;
  try {
    diagnostics = externalRefs(JSON.parse(text));
  } catch {
    diagnostics = []; // not JSON (YAML, or broken): the parser says what is wrong with it
  }
  if (diagnostics.length === 0) {
    const { diagnostics: found } = await new Parser().parse(text, { source });
    diagnostics = found.map((d) => ({
      severity: SEVERITIES[d.severity] ?? String(d.severity),
      code: d.code,
      message: d.message,
      path: d.path,
    }));
  }
  const count = (severity) => diagnostics.filter((d) => d.severity === severity).length;
  const report = { source, errors: count("error"), warnings: count("warning"), diagnostics };
  console.log(JSON.stringify(report, null, 2));
  return report.errors + report.warnings === 0 ? 0 : 1;
}

process.exitCode = await main(process.argv[2]);
