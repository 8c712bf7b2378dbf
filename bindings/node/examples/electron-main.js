// Courier in Electron's main process (a sketch of an app's main.js; it is not run here:
// Electron's npm package downloads a binary this machine cannot fetch).
//
// - The store lives in app.getPath('userData'); its 32-byte key is random, kept
//   encrypted with safeStorage (Keychain on macOS, DPAPI on Windows, libsecret/kwallet
//   on Linux) in a file beside the store. The key never reaches the renderer.
// - The client lives in the main process only. The renderer talks to it over IPC
//   (ipcMain.handle / webContents.send) through a preload script's contextBridge API;
//   events, connection state and errors are forwarded as plain objects.
// - The addon is Node-API: the same courier.<platform>.node works in every Electron
//   release; nothing is rebuilt with electron-rebuild. Packaged with asar, unpack it
//   (electron-builder: "asarUnpack": ["**/*.node"]).
'use strict'

const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const { app, BrowserWindow, ipcMain, safeStorage } = require('electron')
const { CourierClient } = require('@courier/node')

const SERVER_URL = process.env.COURIER_SERVER_URL || 'https://courier.example.invalid'

const dataDir = () => app.getPath('userData')
const storePath = () => path.join(dataDir(), 'courier.db')
const keyPath = () => path.join(dataDir(), 'courier.key')

/** The store key: made once, kept encrypted by the OS key store. */
function storeKey() {
  if (!safeStorage.isEncryptionAvailable()) {
    // On Linux without a secret service, safeStorage would fall back to a hard-coded
    // key ('basic_text'); refuse rather than keep the store key in the clear.
    throw new Error('no OS key store: cannot protect the Courier store key')
  }
  if (fs.existsSync(keyPath())) {
    return Buffer.from(safeStorage.decryptString(fs.readFileSync(keyPath())), 'base64')
  }
  const key = crypto.randomBytes(32)
  fs.writeFileSync(keyPath(), safeStorage.encryptString(key.toString('base64')), { mode: 0o600 })
  return key
}

let client = null
let receiving = null
let window = null

/** Plain, structured-clone-safe copies for IPC (Buffers become Uint8Arrays anyway). */
function forRenderer(event) {
  return 'body' in event ? { ...event, body: new Uint8Array(event.body) } : event
}
function errorForRenderer(error) {
  const { name, message, code, retryable, serverCode, status, retryAfterMs, count, limit, deviceIds } = error
  return { name, message, code, retryable, serverCode, status, retryAfterMs, count, limit, deviceIds }
}

function startReceiving() {
  receiving = client.startReceiving({
    // Called on the main process's JavaScript thread. Returning confirms the batch; an
    // app that stores messages itself returns the promise of that write, so a failed
    // write (a rejection) has the batch delivered again.
    async onEvents(events) {
      window?.webContents.send('courier:events', events.map(forRenderer))
    },
    onConnectionState(state) {
      window?.webContents.send('courier:connection', state)
    },
    onError(error) {
      window?.webContents.send('courier:error', errorForRenderer(error))
      if (error.code === 'device_removed') signedOut()
    },
  })
}

function signedOut() {
  receiving?.cancel()
  client?.close()
  client = null
  fs.rmSync(storePath(), { force: true })
  fs.rmSync(keyPath(), { force: true })
}

/** IPC: every handler converts a CourierError into a plain object the renderer can read. */
function handle(channel, fn) {
  ipcMain.handle(channel, async (_event, ...args) => {
    try {
      return { ok: await fn(...args) }
    } catch (error) {
      return { error: errorForRenderer(error) }
    }
  })
}

handle('courier:login', async (username, password) => {
  client = await CourierClient.login(SERVER_URL, storePath(), storeKey(), username, password, `Desktop (${process.platform})`)
  startReceiving()
  return client.ownDevice
})
handle('courier:register', async (username, password) => {
  client = await CourierClient.register(SERVER_URL, storePath(), storeKey(), username, password, `Desktop (${process.platform})`)
  startReceiving()
  return client.ownDevice
})
// The renderer passes its outbox row ID as the client message ID: a retry after a
// `network` error (or a restart) sends the message once.
handle('courier:send', (recipientUserId, body, outboxId) => client.send(recipientUserId, Buffer.from(body), outboxId))
handle('courier:send-group', (channelId, body, outboxId) => client.sendGroup(channelId, Buffer.from(body), outboxId))
handle('courier:create-channel', (memberUserIds) => client.createChannel(memberUserIds))
handle('courier:mark-read', (messageId, upTo) => client.markRead(messageId, upTo))
handle('courier:devices', (userId) => client.devices(userId))
handle('courier:log-out', async () => {
  await client.logOut()
  signedOut()
})

app.whenReady().then(async () => {
  window = new BrowserWindow({
    webPreferences: { preload: path.join(__dirname, 'preload.js'), contextIsolation: true, sandbox: true },
  })
  await window.loadFile(path.join(__dirname, 'index.html'))
  if (fs.existsSync(storePath())) {
    try {
      client = await CourierClient.open(storePath(), storeKey())
      startReceiving()
    } catch (error) {
      // wrong_store_key (the key file was replaced), store_too_new (an older app on a
      // newer store): the file is left as it was; tell the user.
      window.webContents.send('courier:error', errorForRenderer(error))
    }
  }
})

let quitting = false
app.on('before-quit', (event) => {
  if (quitting || !receiving) return
  // Stop the loop (a batch being handled is confirmed first), release the store, quit.
  event.preventDefault()
  quitting = true
  receiving.cancel()
  receiving.wait().finally(() => {
    client?.close()
    app.quit()
  })
})
