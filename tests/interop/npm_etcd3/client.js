// The npm etcd3 client (grpc-js) against an etcd v3 gRPC endpoint:
//   node client.js URL[,URL...]
// KV put/get/delete, a txn with if/then/else, a watch stream that receives
// put and delete events, a lease kept alive with a key attached.  Prints one
// line per check ("ok <name>") and a final JSON summary; exits 1 on the
// first failed check.
'use strict';
const assert = require('assert');
const { Etcd3 } = require('etcd3');

const hosts = process.argv[2].split(',');
const client = new Etcd3({ hosts, dialTimeout: 5000 });
const checks = [];

function ok(name) {
  checks.push(name);
  console.log('ok ' + name);
}

async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise(r => setTimeout(r, 20));
  }
}

async function kv() {
  await client.put('npm/a').value('one');
  assert.strictEqual(await client.get('npm/a').string(), 'one');
  const prev = await client.put('npm/a').value('two').getPrevious();
  assert.strictEqual(prev && prev.value.toString(), 'one');
  await client.put('npm/b').value('bee');
  assert.deepStrictEqual(await client.getAll().prefix('npm/').strings(),
                         { 'npm/a': 'two', 'npm/b': 'bee' });
  assert.strictEqual(await client.getAll().prefix('npm/').count(), 2);
  assert.deepStrictEqual(await client.getAll().prefix('npm/').keys(), ['npm/a', 'npm/b']);
  const del = await client.delete().key('npm/a');
  assert.strictEqual(del.deleted, '1');
  assert.strictEqual(await client.get('npm/a').string(), null);
  const delAll = await client.delete().prefix('npm/').getPrevious();
  assert.deepStrictEqual(delAll.map(k => k.key.toString()), ['npm/b']);
  assert.strictEqual(await client.getAll().prefix('npm/').count(), 0);
  ok('kv put/get/delete');
}

async function txn() {
  // The key is missing: the compare fails and the else branch runs.
  let r = await client.if('npm/t', 'Value', '==', 'x')
      .then(client.put('npm/t').value('then'))
      .else(client.put('npm/t').value('else'), client.get('npm/u'))
      .commit();
  assert.strictEqual(r.succeeded, false);
  assert.strictEqual(r.responses.length, 2);
  assert.strictEqual(await client.get('npm/t').string(), 'else');
  r = await client.if('npm/t', 'Value', '==', 'else')
      .and('npm/t', 'Version', '>', 0)
      .then(client.get('npm/t'), client.put('npm/t').value('then'))
      .else(client.put('npm/t').value('wrong'))
      .commit();
  assert.strictEqual(r.succeeded, true);
  assert.strictEqual(r.responses[0].response_range.kvs[0].value.toString(), 'else');
  assert.strictEqual(await client.get('npm/t').string(), 'then');
  await client.delete().key('npm/t');
  ok('txn if/then/else');
}

async function watch() {
  const events = [];
  const watcher = await client.watch().prefix('npm/w/').withPreviousKV().create();
  watcher.on('put', (kv, prev) => events.push(['put', kv.key.toString(), kv.value.toString(),
                                                prev ? prev.value.toString() : null]));
  watcher.on('delete', (kv, prev) => events.push(['delete', kv.key.toString(), null,
                                                   prev ? prev.value.toString() : null]));
  let error = null;
  watcher.on('error', e => { error = e; });
  await client.put('npm/w/1').value('a');
  await client.put('npm/w/1').value('b');
  await client.put('npm/other').value('not watched');
  await client.delete().key('npm/w/1');
  await waitFor(() => events.length >= 3 || error, 10000, 'three watch events');
  assert.strictEqual(error, null);
  assert.deepStrictEqual(events, [['put', 'npm/w/1', 'a', null], ['put', 'npm/w/1', 'b', 'a'],
                                  ['delete', 'npm/w/1', null, 'b']]);
  // cancel() waits for the server's canceled response.
  await Promise.race([watcher.cancel(), new Promise((_, rej) =>
    setTimeout(() => rej(new Error('watch cancel not answered in 5s')), 5000))]);
  await client.put('npm/w/2').value('after cancel');
  await new Promise(r => setTimeout(r, 200));
  assert.strictEqual(events.length, 3);
  await client.delete().prefix('npm/');
  ok('watch put/delete events and cancel');
}

async function lease() {
  const lease = client.lease(2);
  let lost = null;
  let kept = 0;
  lease.on('lost', e => { lost = e; });
  lease.on('keepaliveSucceeded', () => { kept++; });
  const id = await lease.grant();
  await lease.put('npm/leased').value('v');
  // Keep-alives go out at once and then every TTL/3: once the TTL has
  // passed with keep-alives since, the key lives only because of them.
  const start = Date.now();
  await waitFor(() => (kept >= 3 && Date.now() - start >= 2500) || lost, 10000,
                'keep-alives for longer than the TTL');
  assert.strictEqual(lost, null);
  assert.strictEqual(await client.get('npm/leased').string(), 'v');
  const ttl = await client.leaseClient.leaseTimeToLive({ ID: id, keys: true });
  assert.ok(Number(ttl.TTL) > 0, 'TTL ' + ttl.TTL);
  assert.strictEqual(ttl.grantedTTL, '2');
  assert.deepStrictEqual(ttl.keys.map(k => k.toString()), ['npm/leased']);
  await lease.revoke();
  assert.strictEqual(await client.get('npm/leased').string(), null);
  ok('lease keep-alive and attached key');
}

(async () => {
  try {
    await kv();
    await txn();
    await watch();
    await lease();
    console.log(JSON.stringify({ ok: true, checks }));
    client.close();
    process.exit(0);
  } catch (e) {
    console.log(JSON.stringify({ ok: false, checks, error: String(e && e.stack || e) }));
    process.exit(1);
  }
})();
