/**
 * The managed (v2) plugin as Docker users install it: pulled from a registry
 * with `docker plugin install --alias ovs --grant-all-permissions`, used as
 * `ovs:latest`, configured with `docker plugin set`, disabled, enabled and
 * upgraded without losing networks or addresses. (test/run-managed.sh builds
 * and pushes it, then runs the whole end-to-end suite against it as well.)
 */
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { linkLocalOf } from '../../src/domain/flows.js';
import { MANAGED, MANAGED_REF, SimHost } from '../e2e/harness/sim-host.js';
import { TEST_IMAGE } from '../e2e/harness/image.js';
import { waitFor } from '../e2e/harness/proc.js';
import { containerAddress, endpointPortName, inspect, ping, runContainer } from '../e2e/support.js';

describe('the managed plugin', () => {
  let host: SimHost;
  const plugin = async () => JSON.parse((await host.docker(['plugin', 'inspect', 'ovs'])).stdout)[0];

  before(async () => {
    assert.ok(MANAGED, 'run with OVSNET_E2E_PLUGIN=managed (npm run test:managed does)');
    host = await SimHost.start({ name: 'mgd' });
    await host.docker(['network', 'create', '-d', 'ovs:latest', '--ipam-driver', 'ovs:latest', '--subnet', '10.80.0.0/24', '-o', 'vlan=80', 'm80']);
    await runContainer(host, 'a1', 'm80');
    await runContainer(host, 'a2', 'm80', { ip: '10.80.0.50' });
  });
  after(async () => {
    await host?.stop();
  });

  it('was installed from the registry, with the rights and mounts it asks for', async () => {
    const p = await plugin();
    assert.equal(p.Enabled, true);
    assert.equal(p.PluginReference, MANAGED_REF);
    assert.deepEqual([...p.Config.Interface.Types].sort(), ['docker.ipamdriver/1.0', 'docker.networkdriver/1.0']);
    assert.equal(p.Config.Network.Type, 'host');
    assert.deepEqual([...p.Config.Linux.Capabilities].sort(), ['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_ADMIN']);
    const mounts = Object.fromEntries(p.Settings.Mounts.map((m: any) => [m.Name, m.Source]));
    assert.equal(mounts.state, `${host.dir}/state`, 'state lives in a host directory');
    assert.equal((await stat(host.socket)).mode & 0o777, 0o600, 'the socket is root-only');
  });

  it('serves networks as ovs:latest', async () => {
    assert.ok(await ping(host, 'a1', '10.80.0.50'));
    const ports = await host.ownedPorts();
    assert.equal(ports.filter((p) => p.tag === 80 && p.externalIds['ovsnet-role'] === 'endpoint').length, 2);
  });

  it("pins a container to the link-local address its interface has, read in the container's namespace through the docker-run mount", async (t) => {
    t.after(async () => {
      await host.docker(['rm', '-f', 'r1'], { check: false });
      await host.docker(['network', 'rm', 'm81'], { check: false });
    });
    await host.docker(['network', 'create', '-d', 'ovs:latest', '--ipam-driver', 'ovs:latest', '--ipv6', '--subnet', '10.81.0.0/24', '--subnet', 'fd81::/64', '-o', 'vlan=81', 'm81']);
    // Random interface identifiers for interfaces that come into the container once it runs (the sysctl is
    // written after its first interface came in, on some engines): the one connected then has a link-local
    // address that is not the one of its MAC.
    await host.docker(['run', '-d', '--name', 'r1', '--net', 'm80', '--sysctl', 'net.ipv6.conf.default.addr_gen_mode=3', TEST_IMAGE, 'sleep', '1d']);
    await host.docker(['network', 'connect', 'm81', 'r1']);
    const r1 = await containerAddress(host, 'r1', 'm81');
    const dev = (await host.docker(['exec', 'r1', 'sh', '-c', `ip -o link | grep -i ${r1.mac} | cut -d: -f2 | cut -d@ -f1`])).stdout.trim();
    const out = (await host.docker(['exec', 'r1', 'ip', '-6', 'address', 'show', 'dev', dev, 'scope', 'link'])).stdout;
    const real = /inet6 (fe80:[0-9a-f:]+)\/64/.exec(out)?.[1];
    assert.ok(real && real !== linkLocalOf(r1.mac), `a link-local address not of its MAC on ${dev}: ${out}`);
    const learned = async () => (await host.pluginState() as unknown as { endpoints: Array<{ id: string; linkLocal?: string }> }).endpoints.find((e) => e.id === r1.endpointId)?.linkLocal;
    await waitFor('the plugin to learn it', async () => (await learned()) === real, 15_000, 100);
  });

  it('takes settings changed with docker plugin set', async () => {
    await host.docker(['plugin', 'disable', '-f', 'ovs']);
    await host.docker(['plugin', 'set', 'ovs', 'OVSNET_BRIDGE=ovsset']);
    await host.docker(['plugin', 'enable', 'ovs']);
    await host.docker(['network', 'create', '-d', 'ovs:latest', '--ipam-driver', 'ovs:latest', '--subnet', '10.81.0.0/24', '-o', 'vlan=81', 'm81']);
    await runContainer(host, 'b1', 'm81');
    const { endpointId } = await containerAddress(host, 'b1', 'm81');
    const bridge = (await host.vsctl(['port-to-br', await endpointPortName(host, endpointId)])).stdout.trim();
    assert.equal(bridge, 'ovsset', 'a new network without -o bridge lands on the bridge set with docker plugin set');
    assert.ok(await ping(host, 'a1', '10.80.0.50'), 'the existing network is untouched');
    await host.docker(['rm', '-f', 'b1']);
    await host.docker(['network', 'rm', 'm81']);
  });

  it('keeps networks and addresses across disable and enable', async () => {
    const before = await host.pluginState();
    const a1 = await containerAddress(host, 'a1', 'm80');
    await host.docker(['plugin', 'disable', '-f', 'ovs']);
    assert.ok(await ping(host, 'a1', '10.80.0.50'), 'containers keep talking while the plugin is disabled');
    await host.docker(['plugin', 'enable', 'ovs']);
    const after = await host.pluginState();
    assert.deepEqual(after.networks.map((n) => n.id), before.networks.map((n) => n.id));
    assert.deepEqual(after.addresses.map((a) => a.address).sort(), before.addresses.map((a) => a.address).sort());
    assert.equal((await containerAddress(host, 'a1', 'm80')).ip, a1.ip);
    await runContainer(host, 'a3', 'm80');
    assert.ok(await ping(host, 'a3', a1.ip), 'a new container joins as before');
  });

  it('keeps networks and addresses across an upgrade', async (t) => {
    // Enabled again whatever happens here: containers of a disabled plugin's networks cannot be removed.
    t.after(async () => {
      if (!(await plugin()).Enabled) await host.docker(['plugin', 'enable', 'ovs'], { check: false });
    });
    const before = await host.pluginState();
    const startedAt = async () => (await host.docker(['inspect', '-f', '{{.State.StartedAt}}', 'a1'])).stdout.trim();
    const a1Started = await startedAt();
    const next = MANAGED_REF.replace(/:latest$/, ':v2');
    await host.docker(['plugin', 'disable', '-f', 'ovs']);
    assert.ok(await ping(host, 'a1', '10.80.0.50'), 'traffic flows while the plugin is disabled for the upgrade');
    await host.docker(['plugin', 'upgrade', '--grant-all-permissions', '--skip-remote-check', 'ovs', next], { timeoutMs: 180_000 });
    // Docker 20.10 keeps env settings across an upgrade but runs the new version with the mount sources of
    // its config.json, although inspect still shows the ones set: set them again (README, Upgrading).
    const mounts = (await plugin()).Settings.Mounts.filter((m: any) => m.Settable?.includes('source')).map((m: any) => `${m.Name}.source=${m.Source}`);
    await host.docker(['plugin', 'set', 'ovs', ...mounts]);
    await host.docker(['plugin', 'enable', 'ovs']);
    assert.equal((await plugin()).PluginReference, next);
    const after = await host.pluginState();
    assert.deepEqual(after.networks.map((n) => n.id), before.networks.map((n) => n.id));
    assert.deepEqual(after.addresses.map((a) => a.address).sort(), before.addresses.map((a) => a.address).sort());
    assert.ok(await ping(host, 'a1', '10.80.0.50'));
    assert.equal(await startedAt(), a1Started, 'a1 ran through the upgrade');
    await runContainer(host, 'a4', 'm80');
    assert.ok(await ping(host, 'a4', '10.80.0.50'));
    assert.equal((await inspect(host, 'network', 'm80')).Driver, 'ovs:latest', 'networks keep the name they were created with');
  });

  it('uninstalls, keeping its state directory and leaving nothing in OVS', async () => {
    const names = (await host.docker(['ps', '-aq'])).stdout.split('\n').filter(Boolean);
    if (names.length > 0) await host.docker(['rm', '-f', ...names]);
    await host.docker(['network', 'rm', 'm80']);
    await host.docker(['plugin', 'disable', 'ovs']);
    await host.docker(['plugin', 'rm', 'ovs']);
    assert.notEqual((await host.docker(['plugin', 'inspect', 'ovs'], { check: false })).exitCode, 0, 'the plugin is gone');
    assert.ok(await stat(`${host.dir}/state/db/CURRENT`), 'its state directory is kept');
    assert.deepEqual(await host.ownedPorts(), [], 'no port of its own is left');
  });
});
