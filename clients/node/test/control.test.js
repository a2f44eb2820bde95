// startCrmchat() itself: the server it starts, the control calls, the trusted certificate, cleanup.
import { test, before, after, beforeEach } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startCrmchat, ControlError } from '@crmchat/testing'

const here = path.dirname(fileURLToPath(import.meta.url))
let crmchat
before(async () => { crmchat = await startCrmchat() })
after(() => crmchat.stop())
beforeEach(() => crmchat.reset())

const getJson = (url) => new Promise((resolve, reject) => {
  https.get(url, (response) => {
    let text = ''
    response.on('data', (chunk) => { text += chunk })
    response.on('end', () => resolve({ status: response.statusCode, body: JSON.parse(text) }))
  }).on('error', reject)
})

const alive = (pid) => {
  try { process.kill(pid, 0) } catch { return false }
  const stat = `/proc/${pid}/stat`
  return !(fs.existsSync(stat) && fs.readFileSync(stat, 'utf8').split(')').pop().trim().startsWith('Z'))
}

test('the webhook answers over HTTPS, and the global agent trusts the certificate', async () => {
  assert.match(crmchat.webhookUrl, /^https:\/\/127\.0\.0\.1:\d+\/rest\/1\/demowebhookcode1\/$/)
  assert.match(crmchat.caCert, /BEGIN CERTIFICATE/)
  const answer = await getJson(`${crmchat.webhookUrl}imopenlines.crm.chat.getLastId.json?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288`)
  assert.deepEqual([answer.status, answer.body.result], [200, 8773])
})

test('reset brings back the start-up portal and clears faults and the journal (1/2)', async () => {
  await crmchat.control.load({ users: [{ id: 77, name: 'Temporary' }] })
  assert.ok((await crmchat.control.state()).users.some((u) => u.id === 77))
  await crmchat.control.fault('server.time', 'ERROR_CORE')
})

test('reset brings back the start-up portal and clears faults and the journal (2/2)', async () => {
  assert.ok(!(await crmchat.control.state()).users.some((u) => u.id === 77))
  assert.deepEqual(await crmchat.control.faults(), [])
  assert.equal((await crmchat.control.requests()).total, 0)
})

test('snapshots, the clock, and validation problems', async () => {
  const { control } = crmchat
  await control.load({ users: [{ id: 78, name: 'Snap' }] })
  await control.snapshot('with-78')
  await control.reset()
  assert.ok(!(await control.state()).users.some((u) => u.id === 78))
  await control.restore('with-78')
  assert.ok((await control.state()).users.some((u) => u.id === 78))
  assert.ok((await control.snapshots()).some((s) => s.name === 'with-78'))
  await control.deleteSnapshot('with-78')

  const before = (await control.clock()).offset_s
  await control.advanceClock(3600)
  assert.ok((await control.clock()).offset_s >= before + 3600)

  await assert.rejects(control.load({ chats: [{ id: 1, line: 1, connector: 'livechat', members: [999] }] }), (e) => {
    assert.ok(e instanceof ControlError)
    assert.equal(e.status, 400)
    assert.equal(e.error, 'invalid_state')
    assert.ok(e.problems.length > 0)
    return true
  })
})

test('the control API needs the token', async () => {
  const response = await fetch(`${crmchat.httpUrl}/_crmchat/state`, { headers: { Authorization: 'Bearer wrong' } })
  assert.equal(response.status, 401)
})

test('a portal file: its first webhook, its state', async () => {
  const other = await startCrmchat({ fixture: path.join(here, 'portal.json') })
  try {
    assert.match(other.webhookUrl, /\/rest\/1\/markerwebhookcode1\/$/)
    assert.equal((await other.control.state()).portal.domain, 'marker.example')
    const answer = await getJson(`${other.webhookUrl}imopenlines.crm.chat.getLastId.json?CRM_ENTITY_TYPE=lead&CRM_ENTITY=5`)
    assert.equal(answer.body.result, 40)
  } finally {
    await other.stop()
  }
})

test('a server that cannot start is reported, and leaves nothing', async (t) => {
  const bad = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'crmchat-bad-')), 'bad.json')
  fs.writeFileSync(bad, '{"users": [{"id": 1}], "nonsense": true}')
  await assert.rejects(startCrmchat({ fixture: bad }), /nonsense/)
  await assert.rejects(startCrmchat({ fixture: bad + '.missing' }), /does not exist/)
  await assert.rejects(startCrmchat({ binary: '/no/such/crmchat' }), /not an executable/)
  fs.rmSync(path.dirname(bad), { recursive: true })
})

test('stop() ends the process and removes the certificate from the global agent', async () => {
  const other = await startCrmchat()
  const pid = other.pid
  assert.ok(alive(pid))
  assert.ok([].concat(https.globalAgent.options.ca).includes(other.caCert))
  await other.stop()
  assert.ok(!alive(pid))
  assert.ok(![].concat(https.globalAgent.options.ca ?? []).includes(other.caCert))
})

test('a test process killed outright leaves no server behind', { skip: process.platform !== 'linux' && 'needs Linux (setpriv --pdeathsig)' }, async () => {
  const script = `import { startCrmchat } from '@crmchat/testing'
const c = await startCrmchat(); console.log('SERVER_PID', c.pid); process.kill(process.pid, 'SIGKILL')`
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: path.dirname(here), stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (chunk) => { out += chunk })
  await new Promise((resolve) => child.on('exit', resolve))
  const pid = Number(/SERVER_PID (\d+)/.exec(out)?.[1])
  assert.ok(pid > 0, out)
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  assert.ok(!alive(pid), `crmchat ${pid} is still running`)
})
