// Loads the Courier addon built for this platform: `courier.<platform>-<arch>[-<abi>].node`
// next to this file (as `napi build --platform` names it), else `courier.node`.
// Node-API is ABI-stable: the same file loads in every Node.js (18 and later) and every
// Electron release on that platform; nothing is rebuilt per Electron version.
'use strict'

const { existsSync } = require('node:fs')
const { join } = require('node:path')

function isMusl() {
  if (process.platform !== 'linux') return false
  try {
    const report = process.report && process.report.getReport()
    const header = report && (typeof report === 'string' ? JSON.parse(report) : report).header
    return !(header && header.glibcVersionRuntime)
  } catch {
    return false
  }
}

function platformSuffix() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function load() {
  const candidates = [join(__dirname, `courier.${platformSuffix()}.node`), join(__dirname, 'courier.node')]
  for (const file of candidates) {
    if (existsSync(file)) return require(file)
  }
  throw new Error(
    `@courier/node: no addon for ${platformSuffix()} (looked for ${candidates.join(', ')}); ` +
      'build it with `npm run build` (see README.md)',
  )
}

module.exports = load()
