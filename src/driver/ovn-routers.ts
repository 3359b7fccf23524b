/**
 * The OVN routers of the plugin's networks (layer 3): made with the first network that names one, given their
 * way out (an outside address, their gateway chassis, SNAT) when there is an outside network, connected to each
 * network's switch, and removed with their last network. Every host must give a router the same way out.
 */
import { badRequest, conflict, exhausted, unavailable } from '../errors.js';
import { boundsSize } from '../domain/allocator.js';
import { formatIp, parseCidr } from '../domain/cidr.js';
import { OWNER_KEY, OWNER_VALUE, hashOf } from '../domain/names.js';
import type { OvnSpec } from '../domain/options.js';
import { type NbSwitch, ROUTER } from '../domain/ovn.js';
import { type NbRouter, type OvnExternal, describeExternal, gatewayPortNames, outsideAddress, routerAttachment, routerBounds, routerConfig } from '../domain/ovn-router.js';
import { type NetworkRecord, ovnNetwork } from '../domain/records.js';
import type { Logger } from '../log.js';
import type { Northbound } from './ports.js';

export class OvnRouters {
  constructor(private readonly o: { nb: Northbound; log: Logger; external: OvnExternal | undefined }) {}

  /** A network on a router needs an IPv4 subnet with a gateway (the router port's address); nat needs a way out. */
  checkRouted(spec: OvnSpec, subnets: readonly { pool: string; gateway: string | undefined }[]): void {
    const ipv4 = subnets.find((s) => !s.pool.includes(':'));
    if (!ipv4?.gateway) throw badRequest('OvnRouterNeedsGateway', `option ovn_router needs an IPv4 subnet with a gateway: the gateway address lives on the router's port`);
    if (spec.gatewayMode === 'nat' && !spec.internal && !this.o.external) {
      throw badRequest(
        'OvnNoExternal',
        `gateway_mode=nat on OVN router ${spec.ovnRouter} needs a way out: set OVSNET_OVN_EXTERNAL (the outside network: <physical network>,<subnet>,<next hop>) and OVSNET_OVN_GATEWAYS (its gateway chassis) on every host, or use gateway_mode=routed for a router between networks only`,
      );
    }
  }

  /** Every host must give a router the same way out. */
  checkRouterConfig(router: NbRouter): void {
    const mine = routerConfig(this.o.external);
    const theirs = router.externalIds[ROUTER.config];
    if (theirs !== undefined && theirs !== mine) {
      throw conflict(
        'OvnRouterDiffers',
        `OVN router ${router.externalIds[ROUTER.name]} was made with OVSNET_OVN_EXTERNAL/OVSNET_OVN_GATEWAYS ${describeConfig(theirs)}; this host has ${describeConfig(mine)}: give every host the same`,
      );
    }
  }

  /** The router of that name: made with the first network that names it, with its way out when there is one. */
  private async ensureRouter(name: string): Promise<NbRouter> {
    const { nb, log, external } = this.o;
    for (let attempt = 0; attempt < 3; attempt++) {
      let router = await nb.findRouter(name);
      if (!router) {
        const made = await nb.createRouter(name, { [OWNER_KEY]: OWNER_VALUE, [ROUTER.name]: name, [ROUTER.config]: routerConfig(external) });
        router = made.router;
        if (made.created) log.info('made the OVN router', { router: name });
      }
      this.checkRouterConfig(router);
      if (!external || outsideAddress(router, name)) return router;
      const result = await this.addWayOut(router, external);
      if (result === 'gone') continue; // deleted by another host meanwhile (its last network went): make it again
      router = (await nb.findRouter(name)) ?? router;
      if (outsideAddress(router, name)) return router;
      if (result === 'exists') {
        const names = gatewayPortNames(name);
        throw conflict(
          'OvnRouterNameTaken',
          `OVN router ${name} cannot get its way out: a router port or HA chassis group named ${names.lrp} is already in the northbound database without being this router's (ovn-nbctl --columns=_uuid,name find Logical_Router_Port name=${names.lrp}; ovn-nbctl ha-chassis-group-list)`,
        );
      }
      throw exhausted('OvnNoOutsideAddress', `no free address left for OVN router ${name} in ${external.routerRange ?? external.subnet} (OVSNET_OVN_EXTERNAL): every one is another router's or the next hop`);
    }
    throw unavailable('OvnBusy', `OVN router ${name} kept being removed while this host made it; try again`);
  }

  /** Gives a router an outside address of its own: from a point that depends on its name, the first one no other router has. */
  private async addWayOut(router: NbRouter, external: OvnExternal): Promise<'added' | 'taken' | 'exists' | 'gone'> {
    const { nb, log } = this.o;
    const switchUuid = await nb.ensureExternalSwitch(external.physnet);
    const range = parseCidr(external.subnet)!;
    const bounds = routerBounds(external);
    const size = boundsSize(bounds);
    let candidate = bounds.first + BigInt(hashOf(router.externalIds[ROUTER.name] ?? router.name)) % size;
    let result: 'added' | 'taken' | 'exists' | 'gone' = 'taken';
    for (let i = 0n; i < size && result === 'taken'; i++, candidate = candidate >= bounds.last ? bounds.first : candidate + 1n) {
      const address = formatIp({ family: 4, value: candidate });
      if (address === external.nexthop) continue;
      result = await nb.addRouterGateway(router, { physnet: external.physnet, externalSwitchUuid: switchUuid, address, prefix: range.prefix, nexthop: external.nexthop, chassis: external.gateways });
      if (result === 'added') log.info('gave the OVN router its way out', { router: router.name, address, gateways: external.gateways.map((g) => g.chassis) });
    }
    return result;
  }

  /** Connects a network's switch to its router (whoever does it first), and completes the connection when a piece of it is missing. */
  async ensureAttached(network: NetworkRecord, sw: NbSwitch): Promise<void> {
    const { spec, ovn } = ovnNetwork(network);
    if (!spec.ovnRouter) return;
    for (let attempt = 0; attempt < 3; attempt++) {
      const router = await this.ensureRouter(spec.ovnRouter);
      const attachment = routerAttachment({ spec, ovn, ipv4: network.ipv4, ipv6: network.ipv6 }, outsideAddress(router, spec.ovnRouter));
      const result = await this.o.nb.attachSwitch(router.uuid, sw.uuid, attachment);
      if (result === 'router-gone') continue; // its last other network went meanwhile: make it again
      if (result === 'added') this.o.log.info('connected the OVN network to its router', { networkId: network.id, router: spec.ovnRouter, gateways: attachment.lrp.networks });
      return;
    }
    throw unavailable('OvnBusy', `OVN router ${spec.ovnRouter} kept being removed while this host connected ${ovn.subnet} to it; try again`);
  }

  /** The last network off a router removes it. */
  async removeRouterIfUnused(name: string): Promise<void> {
    const router = await this.o.nb.findRouter(name);
    if (router && (await this.o.nb.deleteRouterIf(router, this.o.external?.physnet))) this.o.log.info('removed the OVN router: no network uses it any more', { router: name });
  }
}

function describeConfig(config: string): string {
  return describeExternal(JSON.parse(config) as OvnExternal | null);
}
