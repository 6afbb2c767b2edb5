/** Federation PKI: CA, node certificates with the operator in the SAN, JWS signing keys. */
export { createFederationCa, createSigningKey, hostSanEntry, issueNodeCertificate, operatorOfCertificate, OPERATOR_URI_PREFIX, type PemPair, type SigningAlgorithm } from "./federation-pki.ts";
