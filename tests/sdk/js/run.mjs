// crmchat through the official JavaScript SDK (@bitrix24/b24jssdk), over an inbound webhook and HTTPS.
//
// Needs a fresh `crmchat serve --demo` (deal 288, chat 8773 with members 12, 14, 20, 30; run.py may have run
// before: it leaves 12, 14, 30) and:
//   CRMCHAT_HTTPS_BASE     https://localhost:PORT
//   CRMCHAT_WEBHOOK_USER   1
//   CRMCHAT_WEBHOOK_CODE   demowebhookcode1
//   NODE_EXTRA_CA_CERTS    crmchat's certificate
//   CRMCHAT_SDK_NODE_DIR   where tests/sdk/setup.sh installed the SDK (default: target/sdk/node)
// Prints PASS/FAIL per scenario; exits 1 when any fails.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

// The SDK lives in target/sdk/node, not next to this file: resolve it from there.
const nodeDir = process.env.CRMCHAT_SDK_NODE_DIR
  ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../target/sdk/node')
const { B24Hook, AjaxError } = createRequire(path.join(nodeDir, 'package.json'))('@bitrix24/b24jssdk')

const CHAT = 8773
const DEAL = { CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: 288 }
const env = (name) => process.env[name] ?? assert.fail(`${name} is not set`)

const b24 = B24Hook.fromWebhookUrl(
  `${env('CRMCHAT_HTTPS_BASE')}/rest/${env('CRMCHAT_WEBHOOK_USER')}/${env('CRMCHAT_WEBHOOK_CODE')}/`
)
b24.offClientSideWarning()
const call = async (method, params) => (await b24.actions.v2.call.make({ method, params })).getData().result

const scenarios = {
  async removeUser() {
    assert.equal(await call('imopenlines.crm.chat.user.delete', { ...DEAL, USER_ID: 12 }), CHAT)
  },

  async removeAgainIsUserNotFound() {
    await assert.rejects(call('imopenlines.crm.chat.user.delete', { ...DEAL, USER_ID: 12 }), (e) => {
      assert.ok(e instanceof AjaxError, `an AjaxError, got ${e}`)
      assert.equal(e.code, 'USER_NOT_FOUND')
      assert.equal(e.status, 400)
      assert.equal(e.message, 'The specified user is not in chat.')
      return true
    })
  },

  // REST 3.0 (`/rest/api/...`, the SDK's `actions.v3`) has none of these methods: the vendor's own answer,
  // and nothing changes.
  async restV3IsMethodNotFound() {
    const before = await call('im.chat.user.list', { CHAT_ID: CHAT })
    const response = await b24.actions.v3.call.make({
      method: 'imopenlines.crm.chat.user.delete',
      params: { ...DEAL, USER_ID: 14 }
    })
    assert.equal(response.isSuccess, false)
    const errors = [...response.getErrors()]
    assert.equal(errors.length, 1, `one error: ${errors}`)
    assert.ok(errors[0] instanceof AjaxError, `an AjaxError, got ${errors[0]}`)
    assert.equal(errors[0].code, 'BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION')
    assert.equal(errors[0].status, 404)
    assert.equal(errors[0].message, 'Method "imopenlines.crm.chat.user.delete" was not found.')
    assert.deepEqual(await call('im.chat.user.list', { CHAT_ID: CHAT }), before)
  },

  async batchAddDeleteGetLastId() {
    const response = await b24.actions.v2.batch.make({
      calls: {
        add: ['imopenlines.crm.chat.user.add', { ...DEAL, USER_ID: 12 }],
        delete: ['imopenlines.crm.chat.user.delete', { ...DEAL, USER_ID: 30 }],
        last: ['imopenlines.crm.chat.getLastId', DEAL]
      }
    })
    assert.ok(response.isSuccess, `errors: ${response.getErrorMessages().join('; ')}`)
    assert.deepEqual(response.getData(), { add: CHAT, delete: CHAT, last: CHAT })
  },

  async listChats() {
    assert.deepEqual(await call('imopenlines.crm.chat.get', DEAL), [
      { CHAT_ID: String(CHAT), CONNECTOR_ID: 'livechat', CONNECTOR_TITLE: 'Online chat' }
    ])
  }
}

let failed = 0
for (const [name, scenario] of Object.entries(scenarios)) {
  try {
    await scenario()
    console.log(`PASS js ${name}`)
  } catch (e) {
    failed++
    console.log(`FAIL js ${name}\n${e?.stack ?? e}`)
  }
}
process.exitCode = failed ? 1 : 0
