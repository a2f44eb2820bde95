// The README's example test is example.test.js, verbatim.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'

const read = (relative) => fs.readFileSync(new URL(relative, import.meta.url), 'utf8')
const jsBlocks = (markdown) => [...markdown.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1])

test("the README's example is test/example.test.js, verbatim", () => {
  assert.ok(jsBlocks(read('../README.md')).includes(read('./example.test.js')),
    "README.md's example differs from test/example.test.js")
})
