// Two users with two devices each: direct messages both ways and a group message in a
// channel, every event arriving through the receive loop's callback.
'use strict'

const assert = require('node:assert/strict')
const { test } = require('node:test')

const { register, login, listen } = require('./helpers')

const TIMEOUT = { timeout: 120_000 }

const text = (event) => event.body.toString('utf8')

test('two users with two devices each exchange direct and group messages through the callback', TIMEOUT, async () => {
  const alice1 = await register()
  const alice2 = await login(alice1)
  const bob1 = await register()
  const bob2 = await login(bob1)
  const devices = [alice1, alice2, bob1, bob2]
  const loops = new Map(devices.map((d) => [d, listen(d.client)]))
  const loop = (d) => loops.get(d)
  const hasMessage = (type, body) => (r) => r.events.some((e) => e.type === type && text(e) === body)

  // Alice (device 1) to Bob: both of Bob's devices, and Alice's other device, get it.
  const hello = Buffer.from('hello bob, from alice-1')
  const sent = await alice1.client.send(bob1.userId, hello)
  assert.match(sent.messageId, /^[0-9a-f-]{36}$/)
  assert.equal(typeof sent.clientMessageId, 'string')
  for (const d of [bob1, bob2, alice2]) await loop(d).until(hasMessage('message', hello.toString()))
  for (const d of [bob1, bob2]) {
    const event = loop(d).messages().find((e) => text(e) === hello.toString())
    assert.equal(event.messageId, sent.messageId)
    assert.equal(event.clientMessageId, sent.clientMessageId)
    assert.deepEqual(event.sender, { userId: alice1.userId, deviceId: alice1.deviceId })
    assert.equal(event.conversationUserId, alice1.userId)
    assert.equal(event.fromOwnDevice, false)
    assert.ok(Buffer.isBuffer(event.body))
    assert.equal(typeof event.seq, 'number')
  }
  const copy = loop(alice2).messages().find((e) => text(e) === hello.toString())
  assert.equal(copy.fromOwnDevice, true)
  assert.equal(copy.conversationUserId, bob1.userId)

  // Bob (device 2) back to Alice, under a client message ID of the app's.
  const reply = Buffer.from('hi alice, from bob-2')
  const replySent = await bob2.client.send(alice1.userId, new Uint8Array(reply), 'reply-1')
  assert.equal(replySent.clientMessageId, 'reply-1')
  for (const d of [alice1, alice2, bob1]) await loop(d).until(hasMessage('message', reply.toString()))
  for (const d of [alice1, alice2]) {
    const event = loop(d).messages().find((e) => text(e) === reply.toString())
    assert.equal(event.clientMessageId, 'reply-1')
    assert.deepEqual(event.sender, { userId: bob2.userId, deviceId: bob2.deviceId })
  }

  // A channel of Alice and Bob: a group message from Alice-2 reaches all other devices.
  const channel = await alice2.client.createChannel([bob1.userId])
  assert.deepEqual([...channel.members].sort(), [alice1.userId, bob1.userId].sort())
  assert.equal(channel.createdBy, alice1.userId)
  assert.equal(channel.devices.length, 4)
  const groupBody = Buffer.from('hello channel')
  const groupSent = await alice2.client.sendGroup(channel.channelId, groupBody)
  for (const d of [alice1, bob1, bob2]) await loop(d).until(hasMessage('group_message', groupBody.toString()))
  for (const d of [alice1, bob1, bob2]) {
    const event = loop(d).messages('group_message').find((e) => text(e) === groupBody.toString())
    assert.equal(event.channelId, channel.channelId)
    assert.equal(event.messageId, groupSent.messageId)
    assert.deepEqual(event.sender, { userId: alice2.userId, deviceId: alice2.deviceId })
  }
  // Bob heard of the channel too.
  await loop(bob1).until((r) => r.events.some((e) => e.type === 'membership' && e.channelId === channel.channelId))

  // Every batch came from the SDK's threads through the threadsafe function: the
  // callback runs on its own, from the event loop, not inside any call of ours.
  for (const d of devices) {
    for (const stack of loop(d).stacks) {
      const frames = stack.split('\n').slice(1).filter((line) => line.includes('/test/'))
      assert.equal(frames.length, 1, `onEvents was called from JavaScript:\n${stack}`)
    }
    assert.ok(loop(d).states.some((s) => s.state === 'connected'))
    assert.deepEqual(loop(d).errors, [])
  }

  for (const d of devices) {
    loop(d).handle.cancel()
    await loop(d).handle.wait()
    d.client.close()
  }
})
