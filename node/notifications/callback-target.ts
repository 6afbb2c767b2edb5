import { lookup as lookupCallback, type LookupAddress, type LookupOptions } from "node:dns";
import { BlockList, isIP } from "node:net";

/**
 * Callback URLs come from devices and apps: without a check, a subscription could make the
 * node POST to its own admin listener, a cloud metadata address or the operator's internal
 * network (SSRF). Loopback, link-local, private, unique-local, benchmarking, documentation,
 * multicast and reserved ranges are refused unless the operator allows them
 * (limits.allowPrivateCallbackTargets, for labs and simulators).
 */
const INTERNAL_V4 = [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const;
const internal4 = new BlockList();
for (const [net, prefix] of INTERNAL_V4) internal4.addSubnet(net, prefix, "ipv4");

/**
 * IPv6 is judged by what it reaches: global unicast (2000::/3) is public, but for Teredo
 * (2001::/32, an IPv4 address hidden inside), documentation (2001:db8::/32) and the IPv4 it
 * carries in 6to4 (2002::/16); an
 * IPv4-mapped (::ffff:0:0/96) or NAT64 well-known (64:ff9b::/96) address by its IPv4. Everything
 * else (loopback, unspecified, IPv4-compatible, IPv4-translated, local-use NAT64 64:ff9b:1::/48,
 * unique-local, link-local, site-local, multicast, reserved) is internal. The embedded IPv4 is
 * matched as subnets, so every textual form of the address (`::7f00:1`, `::ffff:127.0.0.1`) is.
 */
const public6 = new BlockList();
public6.addSubnet("2000::", 3, "ipv6");
const carriesIpv4 = new BlockList();
carriesIpv4.addSubnet("::ffff:0.0.0.0", 96, "ipv6");
carriesIpv4.addSubnet("64:ff9b::", 96, "ipv6");
const internal6 = new BlockList();
internal6.addSubnet("2001::", 32, "ipv6");
// Documentation (RFC 3849): never routed.
internal6.addSubnet("2001:db8::", 32, "ipv6");
for (const [net, prefix] of INTERNAL_V4) {
  const [a, b, c, d] = net.split(".").map(Number) as [number, number, number, number];
  const hex = (x: number, y: number) => ((x << 8) | y).toString(16);
  internal6.addSubnet(`::ffff:${net}`, 96 + prefix, "ipv6");
  internal6.addSubnet(`64:ff9b::${net}`, 96 + prefix, "ipv6");
  internal6.addSubnet(`2002:${hex(a, b)}:${hex(c, d)}::`, 16 + prefix, "ipv6");
}

export function isInternalAddress(ip: string): boolean {
  const family = isIP(ip);
  if (family === 4) return internal4.check(ip, "ipv4");
  if (family !== 6) return true;
  if (!public6.check(ip, "ipv6") && !carriesIpv4.check(ip, "ipv6")) return true;
  return internal6.check(ip, "ipv6");
}

/** True when the URL's host is a literal internal address or a local name (checked at subscription). */
export function isInternalHostLiteral(url: string): boolean {
  // A trailing dot names the same host (`localhost.`).
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "").replace(/\.$/, "").toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  return isIP(host) !== 0 && isInternalAddress(host);
}

/** The error code of a connection refused by internalRefusingLookup. */
export const INTERNAL_TARGET = "EINTERNALTARGET";

/**
 * A `lookup` for the callback dispatcher's connections (net.connect's option): the name is
 * resolved once, and the connection goes to the addresses checked, so a name that answers a
 * public address to the check and an internal one to the connection (DNS rebinding) is refused.
 */
export function internalRefusingLookup(
  hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  lookupCallback(hostname, { ...options, all: true }, (error, addresses) => {
    if (error) return callback(error, []);
    if (addresses.length === 0 || addresses.some((a) => isInternalAddress(a.address))) {
      return callback(Object.assign(new Error(`callback host ${hostname} resolves to an internal address`), { code: INTERNAL_TARGET }), []);
    }
    if (options.all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
}
