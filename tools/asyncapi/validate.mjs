// Validates AsyncAPI documents with @asyncapi/parser and prints, as one JSON
// array (one entry per file, in order), each document's diagnostics of
// severity error (0) and warning (1) and its channels' ids and addresses,
// so a test can compare them with what the bus uses.
//
//   node tools/asyncapi/validate.mjs FILE...
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
const results = [];
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"));
  const problems = diagnostics
    .filter((d) => d.severity <= 1)
    .map((d) => ({ severity: d.severity, code: d.code, message: d.message, path: d.path.join(".") }));
  const channels = document
    ? document.channels().all().map((c) => ({ id: c.id(), address: c.address(), messages: c.messages().all().map((m) => m.id()) }))
    : [];
  const operations = document ? document.operations().all().map((o) => ({ id: o.id(), action: o.action() })) : [];
  results.push({ file, parsed: Boolean(document), problems, channels, operations });
}
console.log(JSON.stringify(results));
