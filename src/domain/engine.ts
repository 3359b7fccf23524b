/**
 * What the plugin cannot do well with the Docker Engine it serves, said at start and by `ovsnet doctor`, each
 * with what to do. A pure function of what Docker reports (its version and firewall) and of whether the plugin
 * can read nftables.
 */

export interface EngineFacts {
  /** Docker's ServerVersion, e.g. "29.7.2" or "26.1.5+dfsg1". */
  readonly version: string;
  /** Docker 29's firewall backend ("iptables" or "nftables"); undefined from older engines (iptables). */
  readonly firewallBackend: string | undefined;
  /** undefined: `nft` lists the host's tables; otherwise why not. */
  readonly nftError: string | undefined;
}

export interface EngineProblem {
  readonly kind: 'engine-version' | 'docker-nftables-unseen';
  readonly detail: string;
  readonly fix: string;
}

function versionOf(text: string): [number, number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(text.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** The oldest engine the plugin is tested with. */
export const OLDEST_ENGINE = '20.10.0';

export function engineProblems(facts: EngineFacts): EngineProblem[] {
  const problems: EngineProblem[] = [];
  const v = versionOf(facts.version);
  if (v && v[0] === 29 && v[1] === 0 && v[2] <= 2) {
    problems.push({
      kind: 'engine-version',
      detail: `Docker ${facts.version} crashes when a remote driver's network is a container's gateway (fixed in 29.0.3)`,
      fix: 'upgrade Docker Engine to 29.0.3 or newer',
    });
  } else if (v && (v[0] < 20 || (v[0] === 20 && v[1] < 10))) {
    problems.push({ kind: 'engine-version', detail: `Docker ${facts.version} is older than the oldest engine the plugin is tested with (${OLDEST_ENGINE})`, fix: `upgrade Docker Engine to ${OLDEST_ENGINE} or newer` });
  }
  if (facts.firewallBackend === 'nftables' && facts.nftError !== undefined) {
    problems.push({
      kind: 'docker-nftables-unseen',
      detail: `Docker runs its nftables firewall, whose published ports only nft shows, and the plugin cannot run nft (${facts.nftError}): a port Docker's own bridge publishes is not refused on the plugin's networks, and the first rule takes the traffic`,
      fix: 'install nftables on the host (apt-get install nftables); the managed plugin\'s image has it',
    });
  }
  return problems;
}
