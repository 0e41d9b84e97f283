// Validate a .glb/.gltf with the Khronos glTF validator and print its JSON report.
// usage: node tests/tools/validate_gltf.js FILE   (after: cd tests/tools && npm install)
const fs = require("fs");
const path = require("path");
const validator = require(path.join(__dirname, "node_modules", "gltf-validator"));

const file = process.argv[2];
const bytes = new Uint8Array(fs.readFileSync(file));
validator
  .validateBytes(bytes, { uri: path.basename(file), maxIssues: 100 })
  .then((report) => console.log(JSON.stringify(report, null, 1)))
  .catch((error) => {
    console.error(String(error));
    process.exit(1);
  });
