import { lookup as lookupCallback, type LookupAddress, type LookupOptions } from "node:dns";
import { BlockList, isIP } from "node:net";

/**
 * Callback URLs come from devices and apps: without a check, a subscription could make the
 * node POST to its own admin listener, a cloud metadata address or the operator's internal
 * network (SSRF). Loopback, link-local, private, unique-local, benchmarking, multicast and
 * reserved ranges are refused unless the operator allows them
 * (limits.allowPrivateCallbackTargets, for labs and simulators).
 */
const internal = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const)
  internal.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of [
  ["::", 128],
  ["::1", 128],
  ["fc00::", 7],
  ["fe80::", 10],
  ["ff00::", 8],
] as const)
  internal.addSubnet(net, prefix, "ipv6");

export function isInternalAddress(ip: string): boolean {
  const embedded = embeddedIpv4(ip);
  if (embedded !== undefined) return isInternalAddress(embedded);
  const family = isIP(ip);
  return family === 0 ? true : internal.check(ip, family === 4 ? "ipv4" : "ipv6");
}

/**
 * The IPv4 address inside an IPv4-mapped (`::ffff:…`) or NAT64 (`64:ff9b::/96`) IPv6 address,
 * dotted or hexadecimal (`::ffff:127.0.0.1`, `64:ff9b::7f00:1`): such an address is judged by it.
 */
function embeddedIpv4(ip: string): string | undefined {
  const dotted = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (dotted) return dotted[1]!;
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
  if (!hex) return undefined;
  const [hi, lo] = [parseInt(hex[1]!, 16), parseInt(hex[2]!, 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** True when the URL's host is a literal internal address or a local name (checked at subscription). */
export function isInternalHostLiteral(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "").toLowerCase();
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
