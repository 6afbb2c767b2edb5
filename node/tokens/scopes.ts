/**
 * OAU-002: the OAuth scopes of the twinning API (DESIGN "Tokens and scopes").
 * - `twinning`: everything the subscriber may do on its own paths.
 * - `twinning:twin`: toggle, query and deactivate the one twin named by `twin_id` (HLF-SD-005).
 * - `primary-services`: the primary's messaging/NMS on the primary's behalf (HLF-SD-009).
 */
export const SCOPES = ["twinning", "twinning:twin", "primary-services"] as const;
export type Scope = (typeof SCOPES)[number];

export const isScope = (value: string): value is Scope => (SCOPES as readonly string[]).includes(value);

/** Who a verified bearer token speaks for. */
export interface Principal {
  readonly subject: string;
  readonly scope: Scope;
  readonly twinId: string | undefined;
  /** RFC 8693 `act.sub`: the secondary acting for the primary. */
  readonly actor: string | undefined;
  /**
   * The actor's provisioning this node minted it under (`act.prv`), when this node serves the
   * actor: a primary-services token dies with the secondary's provisioning, as the secondary's
   * own token that opened it does.
   */
  readonly actorProvisioning: string | undefined;
  readonly tokenId: string;
  readonly issuer: string;
  readonly issuedAtS: number;
  readonly expiresAtS: number;
  /**
   * Until when its verification stands, for caches of it (verified tokens, ready answers): its
   * expiry; an external issuer's token at most EXTERNAL_RECHECK_SECONDS after it was verified, so
   * a key the issuer withdraws stops its tokens within that, as a fresh verification would.
   */
  readonly verifiedUntilS: number;
  readonly clientId: string | undefined;
  readonly audience: string;
  /** The provisioning this node minted it under (`prv`; see provisioningStamp). */
  readonly provisioning: string | undefined;
  /** Minted by this node, or by the operator's external authorization server. */
  readonly source: "local" | "external";
}
