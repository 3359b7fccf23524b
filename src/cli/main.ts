#!/usr/bin/env node
/**
 * ovsnet: the operator's command line for the ovs plugin.
 *
 *   ovsnet peers NETWORK                  the tunnel peers of an overlay
 *   ovsnet peers NETWORK set IP[,IP...]   replace them
 *   ovsnet peers NETWORK add IP...        add peers
 *   ovsnet peers NETWORK remove IP...     remove peers
 *
 * NETWORK is a Docker network name or id. Options: --socket PATH (default
 * $OVSNET_SOCKET or /run/docker/plugins/ovs.sock); Docker is reached through
 * $DOCKER_HOST or /var/run/docker.sock.
 */
import { CliError, PluginClient, dockerClient, resolveNetwork } from './client.js';

const USAGE = `usage:
  ovsnet peers NETWORK                  show the tunnel peers of an overlay network
  ovsnet peers NETWORK set IP[,IP...]   replace them
  ovsnet peers NETWORK add IP...        add peers
  ovsnet peers NETWORK remove IP...     remove peers
options:
  --socket PATH   plugin socket (default $OVSNET_SOCKET or /run/docker/plugins/ovs.sock)`;

interface Parsed {
  socket: string;
  args: string[];
}

function parse(argv: readonly string[], env: NodeJS.ProcessEnv): Parsed {
  let socket = env.OVSNET_SOCKET || '/run/docker/plugins/ovs.sock';
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--socket') {
      const value = argv[++i];
      if (!value) throw new CliError('--socket needs a path', 2);
      socket = value;
    } else if (arg.startsWith('--socket=')) {
      socket = arg.slice('--socket='.length);
    } else if (arg === '-h' || arg === '--help') {
      throw new CliError(USAGE, 0);
    } else if (arg.startsWith('-')) {
      throw new CliError(`unknown option ${arg}\n${USAGE}`, 2);
    } else {
      args.push(arg);
    }
  }
  return { socket, args };
}

async function peers(client: PluginClient, env: NodeJS.ProcessEnv, args: string[], out: (line: string) => void): Promise<void> {
  const [ref, action, ...values] = args;
  if (!ref) throw new CliError(`ovsnet peers needs a network\n${USAGE}`, 2);
  const network = await resolveNetwork(await client.state(), dockerClient(env), ref);
  if (network.spec.mode === 'vlan') throw new CliError(`network ${ref} is a VLAN network (mode=vlan); only overlays have peers`);
  const current = network.spec.peers;
  const given = values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v);
  let wanted: string[];
  switch (action) {
    case undefined:
      for (const peer of current) out(peer);
      return;
    case 'set':
      wanted = given;
      break;
    case 'add':
      if (given.length === 0) throw new CliError('ovsnet peers NETWORK add needs at least one address', 2);
      wanted = [...current, ...given];
      break;
    case 'remove': {
      if (given.length === 0) throw new CliError('ovsnet peers NETWORK remove needs at least one address', 2);
      const unknown = given.filter((g) => !current.includes(g));
      if (unknown.length > 0) throw new CliError(`not a peer of ${ref}: ${unknown.join(', ')} (its peers: ${current.join(', ') || 'none'})`);
      wanted = current.filter((p) => !given.includes(p));
      break;
    }
    default:
      throw new CliError(`unknown action "${action}"; valid: set, add, remove\n${USAGE}`, 2);
  }
  const res = await client.request('PUT', `/ovsnet/networks/${network.id}/peers`, { Peers: wanted });
  if (res.status !== 200) throw new CliError(`the plugin refused: ${res.body?.Err ?? JSON.stringify(res.body)}`);
  for (const peer of res.body.Peers as string[]) out(peer);
}

export async function runCli(argv: readonly string[], env: NodeJS.ProcessEnv, out: (line: string) => void): Promise<void> {
  const { socket, args } = parse(argv, env);
  const [command, ...rest] = args;
  const client = new PluginClient(socket);
  switch (command) {
    case 'peers':
      return peers(client, env, rest, out);
    case undefined:
      throw new CliError(USAGE, 2);
    default:
      throw new CliError(`unknown command "${command}"\n${USAGE}`, 2);
  }
}

runCli(process.argv.slice(2), process.env, (line) => process.stdout.write(line + '\n')).catch((err) => {
  const code = err instanceof CliError ? err.exitCode : 1;
  (code === 0 ? process.stdout : process.stderr).write(`${err instanceof CliError ? err.message : (err as Error).stack}\n`);
  process.exit(code);
});
