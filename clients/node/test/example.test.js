import { test, before, after, beforeEach } from 'node:test'
import assert from 'node:assert/strict'
import { B24Hook, AjaxError } from '@bitrix24/b24jssdk'
import { startCrmchat } from '@crmchat/testing'

let crmchat
before(async () => { crmchat = await startCrmchat() }) // the demo portal, on free ports
after(() => crmchat.stop())
beforeEach(() => crmchat.control.reset()) // every test starts from the same portal

test('removes a user from a deal chat', async () => {
  const b24 = B24Hook.fromWebhookUrl(crmchat.webhookUrl)
  const removeUser12 = () => b24.actions.v2.call.make({
    method: 'imopenlines.crm.chat.user.delete',
    params: { CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: 288, USER_ID: 12 }
  })

  // The demo portal: deal 288 has chat 8773, and operator 12 is in it.
  assert.equal((await removeUser12()).getData().result, 8773)

  // Removing them again is the vendor's error, as the SDK reports it on Bitrix24.
  await assert.rejects(removeUser12(), (e) => e instanceof AjaxError && e.code === 'USER_NOT_FOUND')

  // What the code under test sent, as crmchat received it.
  const calls = await crmchat.control.requests({ method: 'imopenlines.crm.chat.user.delete' })
  assert.deepEqual(calls.map((call) => call.status), [200, 400])
})

test('every test starts from the same portal', async () => {
  // The test above removed user 12, and crmchat was reset since.
  const b24 = B24Hook.fromWebhookUrl(crmchat.webhookUrl)
  const answer = await b24.actions.v2.call.make({
    method: 'imopenlines.crm.chat.user.delete',
    params: { CRM_ENTITY_TYPE: 'deal', CRM_ENTITY: 288, USER_ID: 12 }
  })
  assert.equal(answer.getData().result, 8773)
})
