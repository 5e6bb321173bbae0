// Compiles every contracts/*.sol with npm solc (JS API, pinned in package.json) and writes one
// deterministic JSON artifact per contract into x402pay/testing/artifacts/.
// Usage: node contracts/build.mjs [--check]   (--check: fail if the committed artifacts differ)
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const sourceDir = path.join(root, "contracts");
const outDir = path.join(root, "x402pay", "testing", "artifacts");
const checkOnly = process.argv.includes("--check");

const sources = {};
for (const name of fs.readdirSync(sourceDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[name] = { content: fs.readFileSync(path.join(sourceDir, name), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    // cancun, not the compiler's default osaka, so the bytecode runs on older chains and tools too.
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

function findImports(importPath) {
  const candidates = [path.join(root, "node_modules", importPath), path.join(sourceDir, importPath)];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${importPath}` };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
// Warnings (e.g. OpenZeppelin's transient-storage notice) are shown when building, not when checking.
for (const message of output.errors || []) {
  if (!checkOnly || message.severity === "error") console.error(message.formattedMessage);
}
if (errors.length > 0) process.exit(1);

const expected = new Map();
for (const file of Object.keys(sources)) {
  for (const [contractName, compiled] of Object.entries(output.contracts[file] || {})) {
    const bytecode = compiled.evm.bytecode.object;
    if (!bytecode) continue; // interfaces and abstract contracts
    const artifact = {
      contractName,
      sourceName: `contracts/${file}`,
      compiler: `solc ${solc.version()}`,
      abi: compiled.abi,
      bytecode: `0x${bytecode}`,
      deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
    };
    expected.set(`${contractName}.json`, `${JSON.stringify(artifact, null, 2)}\n`);
  }
}

fs.mkdirSync(outDir, { recursive: true });
const present = fs.readdirSync(outDir).filter((f) => f.endsWith(".json"));
const stale = present.filter((f) => !expected.has(f));
const changed = [...expected].filter(([f, text]) => {
  const target = path.join(outDir, f);
  return !fs.existsSync(target) || fs.readFileSync(target, "utf8") !== text;
});

if (checkOnly) {
  if (stale.length || changed.length) {
    console.error(`artifacts out of date: ${[...stale, ...changed.map(([f]) => f)].join(", ")}`);
    console.error("run `make contracts` and commit x402pay/testing/artifacts/");
    process.exit(1);
  }
  console.log(`artifacts up to date (${expected.size} contracts)`);
} else {
  for (const f of stale) fs.unlinkSync(path.join(outDir, f));
  for (const [f, text] of changed) fs.writeFileSync(path.join(outDir, f), text);
  console.log(`wrote ${changed.length} of ${expected.size} artifacts to ${path.relative(root, outDir)}`);
}
