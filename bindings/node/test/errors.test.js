// The error object (code, server code, status, retryable, variant fields) for the
// failures an app meets: the device limit, the store key, a newer store, an unreachable
// server, a logged-out or removed device, a wrong password on deleting the account.
'use strict'

const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const { test } = require('node:test')

const { CourierClient, PASSWORD, register, login, listen, rejection, storePath, storeKey, username, Proxy } = require('./helpers')

const TIMEOUT = { timeout: 120_000 }

function assertCourierError(error, code) {
  assert.ok(error instanceof Error, `not an Error: ${error}`)
  assert.equal(error.name, 'CourierError')
  assert.equal(error.code, code, `${error.code}: ${error.message}`)
  assert.equal(typeof error.message, 'string')
  assert.equal(typeof error.retryable, 'boolean')
}

function fileDigest(file) {
  const hash = crypto.createHash('sha256')
  for (const f of [file, `${file}-wal`, `${file}-journal`]) {
    if (fs.existsSync(f)) hash.update(fs.readFileSync(f))
  }
  return hash.digest('hex')
}

function sqlite(file, statement) {
  const script = 'import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nr = c.execute(sys.argv[2]).fetchall()\nc.commit()\nprint(r[0][0] if r else "")'
  return execFileSync('python3', ['-c', script, file, statement], { encoding: 'utf8' }).trim()
}

test('a login past the device limit fails with device_limit_reached and its counts', TIMEOUT, async () => {
  const first = await register()
  const second = await login(first)
  const third = await login(first)
  const error = await rejection(CourierClient.login(process.env.COURIER_TEST_SERVER, storePath(), storeKey(), first.username, PASSWORD, 'one too many'))
  assertCourierError(error, 'device_limit_reached')
  assert.equal(error.count, 3)
  assert.equal(error.limit, 3)
  assert.deepEqual([...error.deviceIds].sort(), [first.deviceId, second.deviceId, third.deviceId].sort())
  assert.equal(error.serverCode, 'device_limit_reached')
  assert.equal(error.status, 409)
  assert.equal(error.retryable, false)
  for (const d of [first, second, third]) d.client.close()
})

test('wrong password and an invalid store key are typed errors', TIMEOUT, async () => {
  const user = await register()
  const wrongPassword = await rejection(CourierClient.login(process.env.COURIER_TEST_SERVER, storePath(), storeKey(), user.username, 'not the password', 'x'))
  assertCourierError(wrongPassword, 'invalid_credentials')
  assert.equal(wrongPassword.serverCode, 'invalid_credentials')
  assert.equal(wrongPassword.status, 401)
  const shortKey = await rejection(CourierClient.open(user.storePath, Buffer.alloc(16)))
  assertCourierError(shortKey, 'invalid_argument')
  user.client.close()
})

test('a wrong store key fails with wrong_store_key and leaves the store as it was', TIMEOUT, async () => {
  const user = await register()
  user.client.close()
  const before = fileDigest(user.storePath)
  const error = await rejection(CourierClient.open(user.storePath, storeKey()))
  assertCourierError(error, 'wrong_store_key')
  assert.equal(error.retryable, false)
  assert.equal(fileDigest(user.storePath), before)
  const reopened = await CourierClient.open(user.storePath, user.key)
  assert.deepEqual(reopened.ownDevice, { userId: user.userId, deviceId: user.deviceId })
  reopened.close()
})

test('a store from a newer version fails with store_too_new and is left as it was', TIMEOUT, async () => {
  const user = await register()
  user.client.close()
  const version = Number(sqlite(user.storePath, 'PRAGMA user_version'))
  assert.ok(version >= 1)
  sqlite(user.storePath, `PRAGMA user_version = ${version + 1}`)
  const error = await rejection(CourierClient.open(user.storePath, user.key))
  assertCourierError(error, 'store_too_new')
  assert.equal(error.found, version + 1)
  assert.equal(error.supported, version)
  assert.equal(Number(sqlite(user.storePath, 'PRAGMA user_version')), version + 1)
  // Back to the version this SDK wrote: it opens again, nothing was changed meanwhile.
  sqlite(user.storePath, `PRAGMA user_version = ${version}`)
  const reopened = await CourierClient.open(user.storePath, user.key)
  assert.equal(reopened.ownDevice.userId, user.userId)
  reopened.close()
})

test('an unreachable server is a retryable network error; the retry under the same client message ID stores one message', TIMEOUT, async () => {
  const proxy = new Proxy()
  await proxy.start()
  const bob = await register()
  const alice = await register(proxy.url)
  // Sessions first, so the sends below are one request each.
  await alice.client.send(bob.userId, Buffer.from('first'))

  await proxy.setMode('down')
  const refused = await rejection(alice.client.send(bob.userId, Buffer.from('second'), 'second-message'))
  assertCourierError(refused, 'network')
  assert.equal(refused.retryable, true)

  // Reachable again, but the server's answer to the send is lost on the way back: the
  // message is stored, the app sees a network error.
  await proxy.setMode('drop-message-responses')
  const lost = await rejection(alice.client.send(bob.userId, Buffer.from('second'), 'second-message'))
  assertCourierError(lost, 'network')
  assert.equal(lost.retryable, true)

  await proxy.setMode('up')
  const sent = await alice.client.send(bob.userId, Buffer.from('second'), 'second-message')
  assert.equal(sent.clientMessageId, 'second-message')

  // A send that failed while the server was unreachable stays in the outbox:
  // sendUnsent() sends it once the server is back.
  await proxy.setMode('down')
  const kept = await rejection(alice.client.send(bob.userId, Buffer.from('kept'), 'kept-message'))
  assertCourierError(kept, 'network')
  await proxy.setMode('up')
  assert.ok((await alice.client.sendUnsent()) >= 1)

  const loop = listen(bob.client)
  await loop.until((r) => r.messages().some((e) => e.clientMessageId === 'second-message'))
  await loop.until((r) => r.messages().some((e) => e.clientMessageId === 'kept-message'))
  // Everything Alice sent is queued already: a third message, sent now, arrives after it.
  await alice.client.send(bob.userId, Buffer.from('third'), 'third-message')
  await loop.until((r) => r.messages().some((e) => e.clientMessageId === 'third-message'))
  const second = loop.messages().filter((e) => e.clientMessageId === 'second-message')
  assert.equal(second.length, 1)
  assert.equal(second[0].messageId, sent.messageId)
  assert.equal(second[0].body.toString(), 'second')
  assert.equal(loop.messages().filter((e) => e.clientMessageId === 'kept-message').length, 1)
  loop.handle.cancel()
  await loop.handle.wait()
  alice.client.close()
  bob.client.close()
  await proxy.stop()
})

test('calls after logOut fail with logged_out; calls of a device removed from another device fail with device_removed', TIMEOUT, async () => {
  const user = await register()
  const other = await login(user)
  const removed = await login(user)
  const peer = await register()

  await other.client.logOut()
  const afterLogOut = await rejection(other.client.send(peer.userId, Buffer.from('x')))
  assertCourierError(afterLogOut, 'logged_out')
  assert.equal(afterLogOut.retryable, false)
  assert.throws(() => other.client.startReceiving({ onEvents() {} }), (e) => e.code === 'logged_out')

  await user.client.removeDevice(removed.deviceId)
  const afterRemoval = await rejection(removed.client.send(peer.userId, Buffer.from('x')))
  assertCourierError(afterRemoval, 'device_removed')
  assert.equal(afterRemoval.serverCode, 'device_removed')
  assert.equal(afterRemoval.retryable, false)

  user.client.close()
  const afterClose = await rejection(user.client.send(peer.userId, Buffer.from('x')))
  assertCourierError(afterClose, 'client_closed')
  assert.throws(() => user.client.ownDevice, (e) => e.code === 'client_closed')
  for (const d of [other, removed, peer]) d.client.close()
})

test('deleteAccount needs the password: a wrong one fails with wrong_password, the right one retires every device of the account', TIMEOUT, async () => {
  const server = process.env.COURIER_TEST_SERVER
  const name = username()
  // The test server takes accounts openly: the registration token goes through as null.
  const first = { storePath: storePath(), key: storeKey() }
  first.client = await CourierClient.register(server, first.storePath, first.key, name, PASSWORD, 'node-1', null)
  const second = await login({ username: name })

  const wrong = await rejection(first.client.deleteAccount('not the password'))
  assertCourierError(wrong, 'wrong_password')
  assert.equal(wrong.serverCode, 'wrong_password')
  assert.equal(wrong.status, 403)
  assert.equal(wrong.retryable, false)
  // Nothing changed: both devices still work.
  await first.client.privacySettings()
  await second.client.privacySettings()

  await first.client.deleteAccount(PASSWORD)
  const deleted = await rejection(first.client.privacySettings())
  assertCourierError(deleted, 'account_deleted')
  assert.equal(deleted.retryable, false)
  assertCourierError(await rejection(CourierClient.open(first.storePath, first.key)), 'account_deleted')
  assertCourierError(await rejection(second.client.privacySettings()), 'device_removed')
  assertCourierError(await rejection(CourierClient.login(server, storePath(), storeKey(), name, PASSWORD, 'node-3')), 'invalid_credentials')
  assertCourierError(await rejection(CourierClient.register(server, storePath(), storeKey(), name, PASSWORD, 'node-4')), 'username_taken')
  first.client.close()
  second.client.close()
})
