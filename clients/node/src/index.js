// Test helpers for crmchat, the self-hosted Bitrix24 REST server for Open Channel CRM chats: start a real
// crmchat on free ports with its control API on, drive it, stop it. Plain Node (>= 18), no dependencies, so it
// works the same from node:test, Vitest and Jest.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import https from 'node:https'
import os from 'node:os'
import net from 'node:net'
import path from 'node:path'
import readline from 'node:readline'
import { randomBytes } from 'node:crypto'
import tls from 'node:tls'

// Settings from the environment that would fight the ones passed on the command line.
const OWN_SETTINGS = ['CRMCHAT_HTTP', 'CRMCHAT_HTTPS', 'CRMCHAT_DATA_DIR', 'CRMCHAT_FIXTURE', 'CRMCHAT_DEMO',
  'CRMCHAT_CONTROL_TOKEN']

/** A refused control call: `status` (HTTP), `error` (its code), `message`, `problems` (state validation). */
export class ControlError extends Error {
  constructor (status, body, what) {
    const details = body && typeof body === 'object' ? body : {}
    let text = `${what}: HTTP ${status}`
    if (details.error) text += ` ${details.error}`
    if (details.message) text += `: ${details.message}`
    if (details.problems?.length) text += '\n  ' + details.problems.join('\n  ')
    else if (!details.error && body) text += `: ${typeof body === 'string' ? body : JSON.stringify(body)}`
    super(text)
    this.name = 'ControlError'
    this.status = status
    this.body = body
    this.error = details.error ?? null
    this.problems = details.problems ?? []
    if (details.message) this.detail = details.message
  }
}

/** The control API (`/_crmchat/…`) of one crmchat. Every call returns the decoded JSON answer. */
export class Control {
  #token
  constructor (baseUrl, token) {
    this.baseUrl = baseUrl.replace(/\/$/, '')
    this.#token = token
  }

  /** One control request; `route` is relative to `/_crmchat/`, or absolute (`/metrics`). */
  async call (httpMethod, route, { body, query, rawBody, contentType = 'application/json', text = false } = {}) {
    const url = new URL(this.baseUrl + (route.startsWith('/') ? route : `/_crmchat/${route}`))
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value))
    }
    const headers = { Authorization: `Bearer ${this.#token}`, Accept: 'application/json' }
    let payload = rawBody
    if (payload === undefined && body !== undefined) payload = JSON.stringify(body)
    if (payload !== undefined) headers['Content-Type'] = contentType
    const response = await fetch(url, { method: httpMethod, headers, body: payload })
    const answer = await response.text()
    if (!response.ok) {
      let decoded = answer
      try { decoded = JSON.parse(answer) } catch {}
      throw new ControlError(response.status, decoded, `${httpMethod} ${url.pathname}`)
    }
    if (text) return answer
    return answer.trim() ? JSON.parse(answer) : null
  }

  /** The whole portal state, as `crmchat state export` writes it (`{detail: 'structure'}`: no members). */
  state ({ detail } = {}) { return this.call('GET', 'state', { query: { detail } }) }

  /** Loads a state document (an object, or the path of a .json/.yaml file): upsert by id, or with
   * `{replace: true}` the whole portal. */
  load (document, { replace = false } = {}) {
    const method = replace ? 'PUT' : 'POST'
    if (typeof document === 'string' || document instanceof URL) {
      const file = document instanceof URL ? document : path.resolve(document)
      const yaml = /\.ya?ml$/i.test(String(file))
      return this.call(method, 'state', {
        rawBody: fs.readFileSync(file),
        contentType: yaml ? 'application/yaml' : 'application/json'
      })
    }
    return this.call(method, 'state', { body: document })
  }

  replaceState (document) { return this.load(document, { replace: true }) }

  /** Back to the start-up state; also clears the journal, events, rate limits, faults and the clock offset. */
  reset () { return this.call('POST', 'reset') }

  snapshot (name) { return this.call('POST', `snapshots/${encodeURIComponent(name)}`) }
  restore (name) { return this.call('POST', `snapshots/${encodeURIComponent(name)}/restore`) }
  snapshots () { return this.call('GET', 'snapshots') }
  deleteSnapshot (name) { return this.call('DELETE', `snapshots/${encodeURIComponent(name)}`) }

  /** The request journal, newest last, filtered by `{method, status, error, userId, sinceId, limit}`; the
   * array also has the journal's `total`. */
  async requests ({ method, status, error, userId, sinceId, limit } = {}) {
    const answer = await this.call('GET', 'requests', {
      query: { method, status, error, user_id: userId, since_id: sinceId, limit }
    })
    return Object.assign(answer.requests, { total: answer.total })
  }

  clearRequests () { return this.call('DELETE', 'requests') }

  /** A fault rule, as `fault(method, error, {times, delayMs, httpStatus, probability, webhookId, clientId})`
   * or one object with the control API's own keys; resolves to the rule's id. */
  async fault (methodOrRule = '*', error = null, options = {}) {
    const rule = typeof methodOrRule === 'object'
      ? { ...methodOrRule }
      : {
          method: methodOrRule,
          error,
          http_status: options.httpStatus,
          delay_ms: options.delayMs,
          times: options.times,
          probability: options.probability,
          webhook_id: options.webhookId,
          client_id: options.clientId
        }
    for (const key of Object.keys(rule)) if (rule[key] === undefined) delete rule[key]
    return (await this.call('POST', 'faults', { body: rule })).id
  }

  faults () { return this.call('GET', 'faults') }
  deleteFault (id) { return this.call('DELETE', `faults/${Number(id)}`) }
  clearFaults () { return this.call('DELETE', 'faults') }

  /** Moves crmchat's clock forward (token expiry, rate limits, `time` blocks, event `ts`). */
  advanceClock (seconds) { return this.call('POST', 'clock', { body: { advance_s: seconds } }) }
  /** Sets the clock (never backwards). */
  setClock (when) {
    return this.call('POST', 'clock', { body: { set: when instanceof Date ? when.toISOString() : when } })
  }

  clock () { return this.call('GET', 'clock') }
  resetClock () { return this.call('DELETE', 'clock') }

  /** The tokens an installed application gets, without the OAuth dance (`{userId, handler}`). */
  installApp (clientId, { userId = 1, handler = null } = {}) {
    return this.call('POST', `apps/${encodeURIComponent(clientId)}/install`, { body: { user_id: userId, handler } })
  }

  uninstallApp (clientId) { return this.call('POST', `apps/${encodeURIComponent(clientId)}/uninstall`, { body: {} }) }
  events ({ status, event, limit } = {}) { return this.call('GET', 'events', { query: { status, event, limit } }) }
  redeliver (id) { return this.call('POST', `events/${Number(id)}/redeliver`, { body: {} }) }
  errors () { return this.call('GET', 'errors') }
  metrics () { return this.call('GET', '/metrics', { text: true }) }
}

/** The crmchat binary: `binary`, else `$CRMCHAT_BIN`, else `crmchat` on `PATH`. */
export function findBinary (binary) {
  const candidate = binary ?? process.env.CRMCHAT_BIN
  if (candidate) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      if (fs.statSync(candidate).isFile()) return candidate
    } catch {}
    throw new Error(`CRMCHAT_BIN=${candidate}: not an executable file`)
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir || '.', 'crmchat')
    try { fs.accessSync(file, fs.constants.X_OK); return file } catch {}
  }
  throw new Error('crmchat is not on PATH: install it (cargo install --path .) or set CRMCHAT_BIN to the binary')
}

// On Linux, util-linux's setpriv makes the server die with the test process even when that is killed outright.
let setpriv
function deathSignalWrapper () {
  if (setpriv === undefined) {
    setpriv = null
    if (process.platform === 'linux') {
      const probe = spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' })
      if (probe.status === 0) setpriv = ['setpriv', '--pdeathsig', 'KILL', '--']
    }
  }
  return setpriv
}

function readPortalFile (file) {
  const text = fs.readFileSync(file, 'utf8')
  if (/\.ya?ml$/i.test(file)) {
    // No YAML parser in Node itself: only the webhooks list is needed, in the simple form state files use.
    const match = /^webhooks:\s*\n\s*-\s*(?:\{([^}]*)\}|([\s\S]*?))(?:\n\s*-|\n\S|$)/m.exec(text)
    if (!match) return {}
    const entry = match[1] ?? match[2]
    const user = /user:\s*(\d+)/.exec(entry)?.[1]
    const code = /code:\s*["']?([A-Za-z0-9]+)/.exec(entry)?.[1]
    return user && code ? { webhooks: [{ user: Number(user), code }] } : {}
  }
  return JSON.parse(text)
}

const running = new Set()
process.once('exit', () => { for (const server of running) server.kill() })

/**
 * Starts `crmchat serve` on free loopback ports with the control API on under a random token, and waits for
 * `/readyz`. Without `fixture` it serves the built-in demo portal.
 *
 * Resolves to `{webhookUrl, caCert, caCertPath, baseUrl, httpUrl, domain, control, stop, pid, log}`. With
 * `trustCa` (the default) Node's global HTTPS agent trusts `caCert` too (the system's certificates stay
 * trusted), which is what `@bitrix24/b24jssdk` and other `https`/axios clients use; `stop()` undoes it.
 */
export async function startCrmchat (options = {}) {
  // The HTTPS port is chosen here, so that the server can be told its public address (`--public-url`): the
  // token answers' `client_endpoint`, which the SDK follows after a refresh, then points at this server. A port
  // taken by someone else between choosing and binding it is chosen again.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    try {
      return await startOnce(options, port)
    } catch (e) {
      if (attempt >= 3 || !String(e.message).includes(`binding 127.0.0.1:${port}`)) throw e
    }
  }
}

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

async function startOnce ({ fixture, binary, args = [], startupTimeoutMs = 30_000, trustCa = true } = {}, httpsPort) {
  const bin = findBinary(binary)
  const fixturePath = fixture ? path.resolve(fixture instanceof URL ? fixture.pathname : fixture) : null
  if (fixturePath && !fs.existsSync(fixturePath)) throw new Error(`the portal file ${fixturePath} does not exist`)
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'crmchat-node-'))
  const logPath = path.join(dataDir, 'server.log')
  const token = randomBytes(24).toString('base64url')
  // `--control-token=…` as one argument: a token may begin with '-'.
  const serveArgs = ['serve', '--http', '127.0.0.1:0', '--https', `127.0.0.1:${httpsPort}`,
    '--public-url', `https://127.0.0.1:${httpsPort}`, '--data-dir', dataDir, `--control-token=${token}`, ...(fixturePath ? ['--fixture', fixturePath] : ['--demo']), ...args]
  const wrapper = deathSignalWrapper()
  const [command, ...commandArgs] = wrapper ? [...wrapper, bin, ...serveArgs] : [bin, ...serveArgs]
  const env = { ...process.env }
  for (const key of OWN_SETTINGS) delete env[key]
  const log = fs.openSync(logPath, 'a')
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', log], env, detached: true })
  fs.closeSync(log)
  const printed = []
  let exited = null
  child.once('exit', (code, signal) => { exited = signal ?? code })

  const handle = {
    kill () {
      if (exited === null) { try { process.kill(-child.pid, 'SIGKILL') } catch {} }
      try { fs.rmSync(dataDir, { recursive: true, force: true }) } catch {}
    }
  }
  running.add(handle)
  const logText = () => printed.join('\n') + '\n--- log ---\n' + (fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : '')

  let restoreCa = () => {}
  const stop = async () => {
    running.delete(handle)
    restoreCa()
    restoreCa = () => {}
    if (exited === null) {
      child.ref() // wait for it even if nothing else keeps the process alive
      const gone = once(child, 'exit')
      try { process.kill(-child.pid, 'SIGTERM') } catch {}
      const timer = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL') } catch {} }, 10_000)
      await gone
      clearTimeout(timer)
    }
    child.stdout.destroy()
    fs.rmSync(dataDir, { recursive: true, force: true })
  }

  try {
    const seen = await new Promise((resolve, reject) => {
      const found = {}
      const timer = setTimeout(() => reject(new Error(`crmchat did not print \`ready\` in ${startupTimeoutMs} ms:\n${logText()}`)), startupTimeoutMs)
      const lines = readline.createInterface({ input: child.stdout })
      lines.on('line', (line) => {
        if (!found.ready && !line.startsWith('try:') && !line.startsWith('     curl')) printed.push(line)
        if (found.ready) return
        if (line.startsWith('http: ')) found.http = line.slice(6).trim()
        else if (line.startsWith('https: ')) found.https = line.slice(7).trim()
        else if (line.startsWith('tls certificate: ')) found.cert = line.slice(17).trim().replace(/ \(new\)$/, '')
        else if (line.startsWith('webhook: ')) found.webhook = line.slice(9).trim()
        else if (line.startsWith('control: ') && line.includes('(token ')) found.token = line.split('(token ').pop().replace(/\)\s*$/, '').trim()
        else if (line.trim() === 'ready') { found.ready = true; clearTimeout(timer); resolve(found) }
      })
      child.once('exit', () => setImmediate(() => {
        clearTimeout(timer)
        reject(new Error(`crmchat serve exited (${exited}) before it was ready:\n${logText()}`))
      }))
      child.once('error', (e) => { clearTimeout(timer); reject(e) })
    })
    if (!seen.http || !seen.https || !seen.cert) throw new Error(`crmchat did not print its addresses:\n${logText()}`)
    const control = new Control(seen.http, seen.token || token)
    await waitForReady(seen.http, Date.now() + startupTimeoutMs, () => exited, logText)

    let user, code
    if (fixturePath) {
      const hook = (readPortalFile(fixturePath).webhooks ?? [])[0]
      if (hook) [user, code] = [hook.user, hook.code]
    } else if (seen.webhook) {
      [user, code] = seen.webhook.replace(/\/$/, '').split('/rest/')[1].split('/')
    }
    // The server does not keep the test process alive: a suite that never calls stop() still ends, and the
    // exit handler kills the server then.
    child.unref()
    child.stdout.unref?.()
    const caCert = fs.readFileSync(seen.cert, 'utf8')
    if (trustCa) restoreCa = trustCertificate(caCert)
    const baseUrl = seen.https
    return {
      webhookUrl: user !== undefined ? `${baseUrl}/rest/${user}/${code}/` : null,
      webhookToken: user !== undefined ? `${user}/${code}` : null,
      caCert,
      caCertPath: seen.cert,
      baseUrl,
      httpUrl: seen.http,
      domain: baseUrl.replace(/^https:\/\//, ''),
      oauthTokenUrl: `${baseUrl}/oauth/token/`,
      control,
      reset: () => control.reset(),
      stop,
      pid: child.pid,
      log: logText
    }
  } catch (e) {
    await stop()
    throw e
  }
}

async function waitForReady (httpUrl, deadline, exited, logText) {
  let last = ''
  while (Date.now() < deadline) {
    if (exited() !== null) throw new Error(`crmchat serve exited before /readyz answered:\n${logText()}`)
    try {
      const response = await fetch(`${httpUrl}/readyz`)
      await response.arrayBuffer()
      if (response.status === 200) return
      last = `HTTP ${response.status}`
    } catch (e) {
      last = String(e)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`/readyz did not answer 200 in time (${last}):\n${logText()}`)
}

// Node reads NODE_EXTRA_CA_CERTS only at start-up, before the certificate exists; the global agent's `ca` is
// what https.request (and so axios) uses when a request brings none of its own.
function trustCertificate (pem) {
  const options = https.globalAgent.options
  const had = Object.prototype.hasOwnProperty.call(options, 'ca')
  const before = options.ca
  const current = before === undefined ? [...tls.rootCertificates] : [].concat(before)
  options.ca = [...current, pem]
  return () => {
    if (had) options.ca = before
    else delete options.ca
  }
}
