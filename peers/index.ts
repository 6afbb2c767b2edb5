/** Peer operators: registry, signed message codec, mTLS client. */
export { PeerRegistry, peerListSchema, type Peer, type PeerEntry } from "./peer-registry.ts";
export { FEDERATION_CONTENT_TYPE, FEDERATION_TYP, MessageSigner, importSigningKey, verifyMessage, type FederationClaims, type SigningKey } from "./message-codec.ts";
export { FEDERATION_BASE, PeerClient, peerErrorToTwinningError, type PeerAnswer } from "./peer-client.ts";
