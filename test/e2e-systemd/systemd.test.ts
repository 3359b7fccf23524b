/**
 * The plugin as a daemon under a real systemd: a container with systemd as init (its own network namespace,
 * nothing else), Docker and Open vSwitch as its services, the plugin installed by plugin/install-daemon.sh as
 * on a host. The previous release (PREVIOUS, from this repository's history) is installed first, with its own
 * installer and unit (which made docker.service require the plugin), and containers are started on an ovsnet
 * network it made. Then, with them running:
 * - an upgrade to this build (install-daemon.sh from this tree) leaves dockerd and the containers running and
 *   traffic flowing, migrates the state, removes the old unit's link, and a new container starts;
 * - a start of Docker starts the plugin first;
 * - `systemctl restart ovsnet` leaves dockerd and its containers alone, and traffic flows;
 * - positive control: with the unit of earlier builds (RequiredBy=docker.service) the same restart restarted
 *   dockerd;
 * - `install-daemon.sh --remove` leaves dockerd and its containers running.
 * The engine is Debian's docker.io inside the container; the outer one (the system's) only runs it.
 */
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxTarball, TEST_IMAGE } from '../e2e/harness/image.js';
import { cmd, type Result, waitFor } from '../e2e/harness/proc.js';
import { BASE_DIR, REPO_ROOT } from '../e2e/harness/sim-host.js';

/** The previous release: the last commit before the state had a schema (and before the unit stopped requiring Docker). */
const PREVIOUS = '3fadf30647ba0d071d7374055277a793cc7f6c47';
const IMAGE = 'local/ovsnet-systemd-test';
const NAME = 'ovsnet-t-systemd';
const DIR = path.join(BASE_DIR, 'systemd');

/** A command in the systemd host. */
function inside(args: readonly string[], options: { check?: boolean; timeoutMs?: number } = {}): Promise<Result> {
  return cmd('docker', ['exec', NAME, ...args], { check: options.check ?? true, timeoutMs: options.timeoutMs ?? 60_000, env: { ...process.env, DOCKER_HOST: 'unix:///var/run/docker.sock' } as Record<string, string> });
}
const outer = (args: readonly string[], options: { check?: boolean; timeoutMs?: number } = {}) =>
  cmd('docker', args, { check: options.check ?? true, timeoutMs: options.timeoutMs ?? 60_000, env: { ...process.env, DOCKER_HOST: 'unix:///var/run/docker.sock' } as Record<string, string> });

async function unitProperty(unit: string, property: string): Promise<string> {
  return (await inside(['systemctl', 'show', '-p', property, '--value', unit])).stdout.trim();
}
const dockerdPid = () => unitProperty('docker.service', 'MainPID');
const started = async (container: string) => (await inside(['docker', 'inspect', '-f', '{{.State.StartedAt}}', container])).stdout.trim();
const pings = async (from: string, to: string) => (await inside(['docker', 'exec', from, 'ping', '-c', '1', '-W', '2', to], { check: false })).exitCode === 0;

/** What must not change when the plugin restarts: dockerd's process and each container's start. */
async function snapshot(): Promise<{ dockerd: string; a: string; b: string }> {
  return { dockerd: await dockerdPid(), a: await started('web-a'), b: await started('web-b') };
}

async function waitActive(unit: string): Promise<void> {
  await waitFor(`${unit} to be active`, async () => (await inside(['systemctl', 'is-active', unit], { check: false })).stdout.trim() === 'active', 60_000, 250);
}

/** The plugin answers on its socket again (after a restart). */
async function pluginAnswers(): Promise<void> {
  await waitActive('ovsnet.service');
  await waitFor('the plugin to answer', async () => (await inside(['ovsnet', 'networks'], { check: false })).exitCode === 0, 60_000, 250);
}

/** Installs (or upgrades to) the build in `tree` with its own installer, and waits until it answers. */
async function install(tree = '/opt/src'): Promise<void> {
  await inside(['bash', `${tree}/plugin/install-daemon.sh`], { timeoutMs: 600_000 });
  await pluginAnswers();
}

describe('the daemon under systemd', () => {
  before(async () => {
    await outer(['rm', '-f', NAME], { check: false });
    await rm(DIR, { recursive: true, force: true });
    await mkdir(path.join(DIR, 'docker'), { recursive: true });
    await cmd('bash', [path.join(REPO_ROOT, 'plugin/make-base.sh')], { timeoutMs: 900_000 });
    await outer(['build', '-q', '--network', 'host', '-t', IMAGE, path.join(REPO_ROOT, 'test/e2e-systemd')], { timeoutMs: 900_000 });
    // Its own network namespace with only loopback: what runs inside reaches nothing outside. What --privileged
    // gives, but for CAP_SYS_RESOURCE, which this machine's root does not have (so --privileged fails here):
    // every other capability, no seccomp or AppArmor profile, /proc/sys writable, every device, the cgroup
    // tree for systemd and the Docker inside.
    await outer([
      'run', '-d', '--cap-add', 'ALL', '--cap-drop', 'SYS_RESOURCE', '--security-opt', 'seccomp=unconfined', '--security-opt', 'apparmor=unconfined',
      '--security-opt', 'systempaths=unconfined', '--device-cgroup-rule', 'a *:* rwm', '--device', '/dev/net/tun', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw',
      '--network', 'none', '--name', NAME, '--hostname', 'ovsnet-systemd',
      '--tmpfs', '/run', '--tmpfs', '/run/lock', '--tmpfs', '/tmp', '-v', `${path.join(DIR, 'docker')}:/var/lib/docker`, IMAGE,
    ]);
    await waitFor('systemd to have started Docker', async () => (await inside(['systemctl', 'is-active', 'docker.service'], { check: false })).stdout.trim() === 'active', 180_000, 500);
    await waitActive('ovs-vswitchd.service');
    // The source as a fresh clone would give it, with its dependencies; install-daemon.sh builds and installs.
    await inside(['mkdir', '-p', '/opt/src']);
    const parts = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'docs', 'src', 'plugin', 'node_modules'];
    // What the previous release's installer needs (it had no docs/).
    const previousParts = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'src', 'plugin'];
    await cmd('bash', ['-c', `tar -C "$1" -c ${parts.map((p) => `'${p}'`).join(' ')} --exclude=plugin/build | docker exec -i ${NAME} tar -C /opt/src -x`, 'tar', REPO_ROOT], { timeoutMs: 300_000 });
    // The previous release's source from git, with this tree's dependencies (the same package-lock).
    const previous = await cmd('git', ['-C', REPO_ROOT, 'rev-parse', '--verify', '--quiet', `${PREVIOUS}^{commit}`], { check: false });
    assert.equal(previous.exitCode, 0, `the previous release ${PREVIOUS} is not in this clone's history (a shallow clone?): fetch it to run this test`);
    await inside(['mkdir', '-p', '/opt/prev']);
    await cmd('bash', ['-c', `git -C "$1" archive "$2" ${previousParts.map((p) => `'${p}'`).join(' ')} | docker exec -i ${NAME} tar -C /opt/prev -x`, 'archive', REPO_ROOT, PREVIOUS], { timeoutMs: 120_000 });
    await inside(['cp', '-a', '/opt/src/node_modules', '/opt/prev/node_modules']);
    await cmd('bash', ['-c', `docker exec -i ${NAME} docker import - "$2" < "$1"`, 'import', await busyboxTarball(BASE_DIR), TEST_IMAGE], { timeoutMs: 120_000 });
    await install('/opt/prev');
    await inside(['docker', 'network', 'create', '-d', 'ovs', '--ipam-driver', 'ovs', '--subnet', '10.77.0.0/24', '--gateway', '10.77.0.1', '-o', 'vlan=77', 'web']);
    for (const name of ['web-a', 'web-b']) await inside(['docker', 'run', '-d', '--name', name, '--net', 'web', '--restart', 'always', TEST_IMAGE, 'sleep', '1d']);
    assert.ok(await pings('web-a', (await inside(['docker', 'inspect', '-f', '{{.NetworkSettings.Networks.web.IPAddress}}', 'web-b'])).stdout.trim()));
  });

  after(async () => {
    if (process.env.OVSNET_E2E_KEEP !== '1') {
      await outer(['rm', '-f', NAME], { check: false, timeoutMs: 120_000 });
      await rm(DIR, { recursive: true, force: true });
    }
  });

  it('an upgrade from the previous release leaves dockerd and its containers running, migrates the state and removes the old link', async () => {
    assert.equal((await inside(['test', '-L', '/etc/systemd/system/docker.service.requires/ovsnet.service'], { check: false })).exitCode, 0, "the previous release's unit made docker.service require the plugin");
    const before = await snapshot();
    const held = (await inside(['docker', 'inspect', '-f', '{{.NetworkSettings.Networks.web.IPAddress}}', 'web-a', 'web-b'])).stdout;
    await install();
    assert.deepEqual(await snapshot(), before, 'the same dockerd, the containers never restarted');
    assert.equal((await inside(['docker', 'inspect', '-f', '{{.NetworkSettings.Networks.web.IPAddress}}', 'web-a', 'web-b'])).stdout, held);
    assert.equal((await inside(['test', '-e', '/etc/systemd/system/docker.service.requires/ovsnet.service'], { check: false })).exitCode, 1, 'the link is gone');
    const log = (await inside(['journalctl', '-u', 'ovsnet.service', '--no-pager', '-o', 'cat'])).stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const migrated = log.find((l) => l.msg === 'state migrated');
    assert.deepEqual(migrated && { from: migrated.fromSchema, to: migrated.toSchema }, { from: 1, to: 2 }, 'the new build migrated the state the previous release wrote');
    const b = (await inside(['docker', 'inspect', '-f', '{{.NetworkSettings.Networks.web.IPAddress}}', 'web-b'])).stdout.trim();
    assert.ok(await pings('web-a', b), 'web-a reaches web-b');
    await inside(['docker', 'run', '-d', '--name', 'web-c', '--net', 'web', TEST_IMAGE, 'sleep', '1d']);
    assert.ok(await pings('web-c', b), 'a container started after the upgrade reaches web-b');
    await inside(['docker', 'rm', '-f', 'web-c']);
    const doctor = await inside(['ovsnet', 'doctor'], { check: false });
    assert.equal(doctor.exitCode, 0, `doctor finds nothing wrong after the upgrade: ${doctor.stdout}${doctor.stderr}`);
  });

  it('the unit installed is wanted by docker.service, and a start of Docker starts the plugin first', async () => {
    assert.equal((await inside(['test', '-L', '/etc/systemd/system/docker.service.wants/ovsnet.service'], { check: false })).exitCode, 0, 'docker.service wants the plugin');
    assert.equal((await inside(['test', '-e', '/etc/systemd/system/docker.service.requires'], { check: false })).exitCode, 1, 'nothing makes docker.service require it');
    await inside(['systemctl', 'stop', 'docker.socket', 'docker.service', 'ovsnet.service'], { timeoutMs: 120_000 });
    await inside(['systemctl', 'start', 'docker.service'], { timeoutMs: 120_000 });
    await pluginAnswers();
    const plugin = Number(await unitProperty('ovsnet.service', 'ExecMainStartTimestampMonotonic'));
    const docker = Number(await unitProperty('docker.service', 'ExecMainStartTimestampMonotonic'));
    assert.ok(plugin > 0 && plugin < docker, `the plugin (${plugin}) started before dockerd (${docker})`);
    await waitFor('web-a and web-b to run again', async () => (await inside(['docker', 'ps', '--format', '{{.Names}}'])).stdout.split('\n').filter((n) => n === 'web-a' || n === 'web-b').length === 2, 120_000, 500);
  });

  it('systemctl restart ovsnet leaves dockerd and its containers alone; traffic flows and new containers start', async () => {
    const before = await snapshot();
    await inside(['systemctl', 'restart', 'ovsnet.service'], { timeoutMs: 120_000 });
    await pluginAnswers();
    assert.deepEqual(await snapshot(), before, 'the same dockerd, the containers never restarted');
    const b = (await inside(['docker', 'inspect', '-f', '{{.NetworkSettings.Networks.web.IPAddress}}', 'web-b'])).stdout.trim();
    assert.ok(await pings('web-a', b), 'a reaches b');
    await inside(['docker', 'run', '-d', '--name', 'web-c', '--net', 'web', TEST_IMAGE, 'sleep', '1d']);
    assert.ok(await pings('web-c', b), 'a container started after the restart reaches b');
    await inside(['docker', 'rm', '-f', 'web-c']);
  });

  it('positive control: with the unit of earlier builds (RequiredBy=docker.service), the same restart restarts dockerd', async () => {
    await inside(['sed', '-i', 's/^WantedBy=docker.service$/RequiredBy=docker.service/', '/etc/systemd/system/ovsnet.service']);
    await inside(['systemctl', 'daemon-reload']);
    await inside(['systemctl', 'reenable', 'ovsnet.service']);
    assert.equal((await inside(['test', '-L', '/etc/systemd/system/docker.service.requires/ovsnet.service'], { check: false })).exitCode, 0);
    const before = await snapshot();
    await inside(['systemctl', 'restart', 'ovsnet.service'], { timeoutMs: 120_000 });
    await waitActive('docker.service');
    assert.notEqual(await dockerdPid(), before.dockerd, 'dockerd was restarted with the plugin');
    await pluginAnswers();
    await waitFor('web-a and web-b to run again', async () => (await inside(['docker', 'ps', '--format', '{{.Names}}'])).stdout.split('\n').filter((n) => n === 'web-a' || n === 'web-b').length === 2, 120_000, 500);
  });

  it('install-daemon.sh --remove stops the plugin and leaves dockerd and its containers running', async () => {
    const before = await snapshot();
    await inside(['bash', '/opt/src/plugin/install-daemon.sh', '--remove'], { timeoutMs: 120_000 });
    assert.notEqual((await inside(['systemctl', 'is-active', 'ovsnet.service'], { check: false })).stdout.trim(), 'active');
    assert.deepEqual(await snapshot(), before, 'the same dockerd, the containers never restarted');
    const b = (await inside(['docker', 'inspect', '-f', '{{.NetworkSettings.Networks.web.IPAddress}}', 'web-b'])).stdout.trim();
    assert.ok(await pings('web-a', b), 'traffic does not need the plugin');
  });
});
