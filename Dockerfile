# The image of the managed plugin (docker plugin create/install), built by plugin/build-managed.sh.
#
# The default base is the official Node image. Machines that cannot pull it (no registry reachable) build on
# a base made locally, with Node and npm in /usr/local/bin:
#     docker build --build-arg BASE=local/ovsnet-base:bookworm .      (plugin/make-base.sh makes one)
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
COPY src ./src
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error

FROM ${BASE}
# What the plugin runs: ip, ethtool, iptables (its legacy and its nf_tables programs both: the plugin writes with
# the one the host's rules are in) and nft (Docker 29's nftables firewall keeps its published ports there).
# ovs-vsctl (from openvswitch-switch) is there for an operator who enters the plugin
# (nsenter -m -t <its pid> ovs-vsctl show); ovs-appctl (the same package) and ovn-trace for `ovsnet trace`
# (ovn-trace alone is taken from ovn-common, which would bring Python along). policy-rc.d keeps the package from starting Open vSwitch services in
# the image.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 iptables nftables ethtool openvswitch-switch busybox libunbound8 \
 && cd /tmp && apt-get download ovn-common && dpkg-deb --fsys-tarfile ovn-common_*.deb | tar -x -C / ./usr/bin/ovn-trace && rm ovn-common_*.deb && cd / \
 && rm -rf /var/lib/apt/lists/* /etc/openvswitch/conf.db
WORKDIR /opt/ovsnet
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
RUN mkdir -p /run/docker/plugins /var/lib/ovsnet /var/run/openvswitch \
 && chmod +x dist/src/cli/main.js && ln -s /opt/ovsnet/dist/src/cli/main.js /usr/local/bin/ovsnet
ENTRYPOINT ["node", "/opt/ovsnet/dist/src/main.js"]
