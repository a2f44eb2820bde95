// The official JavaScript SDK (@bitrix24/b24jssdk) through startCrmchat(): its retry on a rate-limit fault,
// its token refresh after the clock passed an access token's expiry.
import { test, before, after, beforeEach } from 'node:test'
import assert from 'node:assert/strict'
import { B24Hook, B24OAuth, AjaxError } from '@bitrix24/b24jssdk'
import { startCrmchat } from '@crmchat/testing'

const DELETE = 'imopenlines.crm.chat.user.delete'
const DEAL = { CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: 288 }

let crmchat
before(async () => { crmchat = await startCrmchat() })
after(() => crmchat.stop())
beforeEach(() => crmchat.control.reset())

const hook = () => B24Hook.fromWebhookUrl(crmchat.webhookUrl)

test('the SDK retries a QUERY_LIMIT_EXCEEDED fault and then succeeds', async () => {
  const rule = await crmchat.control.fault(DELETE, 'QUERY_LIMIT_EXCEEDED', { times: 2 })
  const started = Date.now()

  const answer = await hook().actions.v2.call.make({ method: DELETE, params: { ...DEAL, USER_ID: 12 } })
  assert.equal(answer.getData().result, 8773)

  assert.ok(Date.now() - started >= 3000, 'the SDK waited between its attempts')
  const calls = await crmchat.control.requests({ method: DELETE })
  assert.deepEqual(calls.map((c) => [c.status, c.error, c.fault ?? null]), [
    [503, 'QUERY_LIMIT_EXCEEDED', rule],
    [503, 'QUERY_LIMIT_EXCEEDED', rule],
    [200, null, null]
  ])
  assert.deepEqual(await crmchat.control.faults(), [])
})

test('a fault that outlasts the retries fails the call and changes nothing', async () => {
  await crmchat.control.fault(DELETE, 'QUERY_LIMIT_EXCEEDED')
  await assert.rejects(hook().actions.v2.call.make({ method: DELETE, params: { ...DEAL, USER_ID: 12 } }), (e) => {
    assert.ok(e instanceof AjaxError, String(e))
    assert.equal(e.code, 'QUERY_LIMIT_EXCEEDED')
    assert.equal(e.status, 503)
    return true
  })
  await crmchat.control.clearFaults()
  const answer = await hook().actions.v2.call.make({ method: DELETE, params: { ...DEAL, USER_ID: 12 } })
  assert.equal(answer.getData().result, 8773)
})

test('the SDK refreshes a token the clock made expire', async () => {
  const installed = await crmchat.control.installApp('local.demo.app', { userId: 1 })
  const clock = await crmchat.control.clock()
  const b24 = new B24OAuth({
    applicationToken: installed.application_token,
    userId: 1,
    memberId: installed.member_id,
    accessToken: installed.access_token,
    refreshToken: installed.refresh_token,
    expires: Math.floor(Date.parse(clock.now) / 1000) + installed.expires_in,
    expiresIn: installed.expires_in,
    scope: 'imopenlines,im',
    domain: crmchat.domain,
    clientEndpoint: installed.client_endpoint,
    serverEndpoint: installed.server_endpoint,
    status: 'L'
  }, { clientId: 'local.demo.app', clientSecret: 'demo-secret' })
  const lastId = async () => (await b24.actions.v2.call.make({ method: 'imopenlines.crm.chat.getLastId', params: DEAL })).getData().result

  assert.equal(await lastId(), 8773)
  await crmchat.control.advanceClock(installed.expires_in + 1)
  assert.equal(await lastId(), 8773)

  const calls = await crmchat.control.requests({ method: 'imopenlines.crm.chat.getlastid' })
  assert.deepEqual(calls.map((c) => [c.status, c.error]), [[200, null], [401, 'expired_token'], [200, null]])
})
