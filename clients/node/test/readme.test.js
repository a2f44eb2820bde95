// The README's example test is example.test.js, verbatim.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const read = (relative) => fs.readFileSync(new URL(relative, import.meta.url), 'utf8')
const jsBlocks = (markdown) => [...markdown.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1])

test("the README's example is test/example.test.js, verbatim", () => {
  assert.ok(jsBlocks(read('../README.md')).includes(read('./example.test.js')),
    "README.md's example differs from test/example.test.js")
})

// The repository README's first screen shows a five-line node:test suite; it runs here as printed.
test("the repository README's node:test snippet runs", async (t) => {
  const root = process.env.CRMCHAT_REPO_ROOT
  if (!root) return t.skip('CRMCHAT_REPO_ROOT is not set (clients/test sets it): the repository README is elsewhere')
  const markdown = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
  const match = /^<!-- example: clients-node file=(\S+) -->\n```\w*\n([\s\S]*?)^```$/m.exec(markdown)
  assert.ok(match, 'the repository README has no `<!-- example: clients-node file=… -->` block')
  const [, name, code] = match
  assert.ok(code.trim().split('\n').length <= 5, 'the README promises five lines')
  // Inside this package, so that '@crmchat/testing' and the SDK resolve as they do for a user.
  const dir = fs.mkdtempSync(path.join(fileURLToPath(new URL('..', import.meta.url)), '.readme-'))
  try {
    fs.writeFileSync(path.join(dir, name), code)
    // Without the variable by which node:test tells a child process to report to its parent instead of printing.
    const { NODE_TEST_CONTEXT, ...env } = process.env
    const run = spawnSync(process.execPath, ['--test', path.join(dir, name)], { encoding: 'utf8', timeout: 120_000, env })
    assert.equal(run.status, 0, run.stdout + run.stderr)
    assert.match(run.stdout, /^# pass 1$/m)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
