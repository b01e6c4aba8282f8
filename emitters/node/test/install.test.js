'use strict';
// The package installs: `npm pack` it, install the tarball into a fresh npm project (offline: the
// package has no runtime dependencies) and require spanline, spanline/otel, spanline/opentracing.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { execFileSync } = require('node:child_process');

const PKG = path.resolve(__dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function run(cmd, args, cwd) {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

test('npm pack → npm install <tarball> in a fresh project → require works', { timeout: 180000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spanline-install-'));
  try {
    const packed = JSON.parse(run(npm, ['pack', '--json', '--pack-destination', dir], PKG));
    const files = packed[0].files.map((f) => f.path).sort();
    for (const f of ['package.json', 'README.md', 'spanline.js', 'otel.js', 'opentracing.js', 'index.d.ts', 'otel.d.ts', 'opentracing.d.ts']) {
      assert.ok(files.includes(f), `${f} is in the tarball (${files.join(', ')})`);
    }
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('bench/') || f.startsWith('node_modules/')), files.join(', '));
    const tarball = path.join(dir, packed[0].filename);
    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    run(npm, ['install', '--offline', '--no-audit', '--no-fund', tarball], app);
    const installed = JSON.parse(fs.readFileSync(path.join(app, 'node_modules', 'spanline', 'package.json'), 'utf8'));
    assert.equal(installed.name, 'spanline');
    assert.ok(!installed.scripts || !['preinstall', 'install', 'postinstall', 'prepare'].some((s) => s in installed.scripts), 'no install scripts');
    assert.ok(!fs.existsSync(path.join(app, 'node_modules', '@opentelemetry')), 'optional peers are not installed');
    const script = `
      const assert = require('assert');
      const spanline = require('spanline');
      const otel = require('spanline/otel');
      assert.equal(typeof spanline.encodeSpan, 'function');
      assert.equal(typeof spanline.Tracer, 'function');
      assert.equal(typeof otel.SpanlineSpanProcessor, 'function');
      assert.equal(typeof otel.SpanlineSpanExporter, 'function');
      let err = null;
      try { require('spanline/opentracing'); } catch (e) { err = e; }
      assert.ok(err && /npm install opentracing/.test(err.message), String(err));
      const t = new spanline.Tracer({ service: 'svc' });
      t.startSpan('installed').finish();
    `;
    const out = run(process.execPath, ['-e', script], app);
    assert.match(out, /^SPLN1 \S+ \d+ \d+ installed \*s=svc;\n$/);
    // With its optional peer, spanline/opentracing loads and is the application's Tracer.
    fs.cpSync(path.join(PKG, 'node_modules', 'opentracing'), path.join(app, 'node_modules', 'opentracing'), { recursive: true });
    const ot = run(process.execPath, ['-e', `
      const opentracing = require('opentracing');
      const { SpanlineTracer } = require('spanline/opentracing');
      const t = new SpanlineTracer({ component_name: 'ot' });
      if (!(t instanceof opentracing.Tracer)) throw new Error('not an opentracing.Tracer');
      t.startSpan('ot-span').finish();
    `], app);
    assert.match(ot, /^SPLN1 \S+ \d+ \d+ ot-span \*s=ot;\n$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
