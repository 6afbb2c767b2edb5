import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";

/**
 * Callback URLs come from devices and apps: without a check, a subscription could make the
 * node POST to its own admin listener, a cloud metadata address or the operator's internal
 * network (SSRF). Loopback, link-local, private and unique-local ranges are refused unless
 * the operator allows them (limits.allowPrivateCallbackTargets, for labs and simulators).
 */
const internal = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.168.0.0", 16],
] as const)
  internal.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of [
  ["::", 128],
  ["::1", 128],
  ["fc00::", 7],
  ["fe80::", 10],
] as const)
  internal.addSubnet(net, prefix, "ipv6");

export function isInternalAddress(ip: string): boolean {
  // An IPv4-mapped IPv6 address is judged by its IPv4 part.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return isInternalAddress(mapped[1]!);
  const family = isIP(ip);
  return family === 0 ? true : internal.check(ip, family === 4 ? "ipv4" : "ipv6");
}

/** True when the URL's host is a literal internal address or a local name (checked at subscription). */
export function isInternalHostLiteral(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  return isIP(host) !== 0 && isInternalAddress(host);
}

/** True when any address the host resolves to is internal (checked again before each send). */
export async function resolvesInternally(url: string): Promise<boolean> {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
  if (isIP(host)) return isInternalAddress(host);
  const addresses = await lookup(host, { all: true });
  return addresses.some((a) => isInternalAddress(a.address));
}
