// The receive loop: cancelling it, a listener that throws, one loop per client, and a
// Node process that ends by itself once the client is let go.
'use strict'

const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { test } = require('node:test')

const { register, listen } = require('./helpers')

const TIMEOUT = { timeout: 120_000 }

/** Runs a fixture script in a child `node`; resolves with its exit code, signal, output. */
function runChild(script, args = [], nodeOptions = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeOptions, path.join(__dirname, 'fixtures', script), ...args], {
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    child.on('error', reject)
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}

test('a cancelled receive loop stops: wait() resolves, the last state is stopped, later messages stay queued', TIMEOUT, async () => {
  const alice = await register()
  const bob = await register()
  const loop = listen(bob.client)
  await alice.client.send(bob.userId, Buffer.from('before cancel'))
  await loop.until((r) => r.messages().length === 1)

  loop.handle.cancel()
  await loop.handle.wait()
  assert.equal(loop.handle.isFinished, true)
  assert.deepEqual(loop.states.at(-1), { state: 'stopped' })
  assert.deepEqual(loop.errors, [])

  // Nothing takes events any more: a message sent now waits in the queue.
  const sent = await alice.client.send(bob.userId, Buffer.from('after cancel'))
  await bob.client.receiveUntilCaughtUp()
  const pending = await bob.client.pendingEvents(100)
  assert.ok(pending.some((e) => e.type === 'message' && e.messageId === sent.messageId))
  assert.equal(loop.messages().length, 1)
  assert.ok(!pending.some((e) => e.type === 'message' && e.body.toString() === 'before cancel'), 'a delivered batch was confirmed')

  // A new loop may start, and it gets what the stopped one left.
  const again = listen(bob.client)
  await again.until((r) => r.messages().some((e) => e.messageId === sent.messageId))
  again.handle.cancel()
  await again.handle.wait()
  alice.client.close()
  bob.client.close()
})

test('one receive loop per client: a second start fails with already_receiving', TIMEOUT, async () => {
  const user = await register()
  const loop = listen(user.client)
  assert.throws(() => user.client.startReceiving({ onEvents() {} }), (error) => {
    assert.equal(error.code, 'already_receiving')
    assert.equal(error.name, 'CourierError')
    return true
  })
  loop.handle.cancel()
  await loop.handle.wait()
  user.client.close()
})

test('a listener that throws: the loop reports listener_failed, survives, and delivers the events again', TIMEOUT, async () => {
  const alice = await register()
  const bob = await register()
  let calls = 0
  const loop = listen(bob.client, {
    onEvents(batch) {
      calls += 1
      if (calls === 1) throw new Error('the app could not store the batch')
    },
  })
  await alice.client.send(bob.userId, Buffer.from('must not be lost'))
  await loop.until((r) => r.errors.length >= 1 && r.events.some((e) => e.type === 'message'))

  const [error] = loop.errors
  assert.equal(error.code, 'listener_failed')
  assert.equal(error.retryable, true)
  assert.match(error.message, /the app could not store the batch/)
  // The failed batch came again, the same events under the same sequence numbers.
  const [failed, retried] = loop.batches
  assert.deepEqual(
    retried.slice(0, failed.length).map((e) => e.seq),
    failed.map((e) => e.seq),
  )
  assert.equal(loop.messages().filter((e) => e.body.toString() === 'must not be lost').length, 1)

  // The loop goes on: the next message arrives as usual, no further error.
  await alice.client.send(bob.userId, Buffer.from('next'))
  await loop.until((r) => r.messages().some((e) => e.body.toString() === 'next'))
  assert.equal(loop.errors.length, 1)
  assert.ok(!loop.handle.isFinished)
  loop.handle.cancel()
  await loop.handle.wait()
  alice.client.close()
  bob.client.close()
})

test('a listener whose promise rejects has the batch delivered again', TIMEOUT, async () => {
  const alice = await register()
  const bob = await register()
  let calls = 0
  const loop = listen(bob.client, {
    async onEvents() {
      calls += 1
      await new Promise((resolve) => setImmediate(resolve))
      if (calls === 1) throw new Error('async failure')
    },
  })
  await alice.client.send(bob.userId, Buffer.from('async'))
  await loop.until((r) => r.errors.length >= 1 && r.batches.length >= 2)
  assert.equal(loop.errors[0].code, 'listener_failed')
  assert.match(loop.errors[0].message, /async failure/)
  assert.deepEqual(
    loop.batches[1].map((e) => e.seq),
    loop.batches[0].map((e) => e.seq),
  )
  loop.handle.cancel()
  await loop.handle.wait()
  alice.client.close()
  bob.client.close()
})

test('a Node process ends by itself (exit code 0) after its receive loop is cancelled and the client closed', TIMEOUT, async () => {
  const result = await runChild('exit-after-close.js', ['cancel'])
  assert.equal(result.signal, null, result.stderr)
  assert.equal(result.code, 0, result.stderr)
  assert.match(result.stdout, /done: cancel/)
})

test('a Node process ends by itself (exit code 0) after closing a client whose loop runs', TIMEOUT, async () => {
  const result = await runChild('exit-after-close.js', ['close'])
  assert.equal(result.signal, null, result.stderr)
  assert.equal(result.code, 0, result.stderr)
  assert.match(result.stdout, /done: close/)
})

test('dropping a client while its loop runs does not crash: it is collected, the loop stops, the process ends with 0', TIMEOUT, async () => {
  const result = await runChild('drop-while-receiving.js', [], ['--expose-gc'])
  assert.equal(result.signal, null, result.stderr)
  assert.equal(result.code, 0, result.stderr)
  assert.match(result.stdout, /stopped: true/)
})
