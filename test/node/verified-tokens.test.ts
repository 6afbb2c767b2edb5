import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { describe, expect, it } from "vitest";
import { AccessTokens, EXTERNAL_RECHECK_SECONDS } from "../../node/tokens/access-tokens.ts";
import { ManualClock } from "../helpers/manual-clock.ts";

/** AccessTokens' verified-token cache, with an external issuer whose published keys the test changes. */
async function tokensWithExternalIssuer() {
  const clock = new ManualClock();
  const own = await generateKeyPair("ES256", { extractable: true });
  const idp = await generateKeyPair("ES256", { extractable: true });
  let published: JSONWebKeySet = { keys: [{ ...(await exportJWK(idp.publicKey)), kid: "idp-1", alg: "ES256" }] };
  const externalKeys: JWTVerifyGetKey = (header, token) => createLocalJWKSet(published)(header, token);
  const tokens = new AccessTokens({
    issuer: "urn:twinning:operator:001-01",
    privateKey: own.privateKey,
    publicJwks: [{ ...(await exportJWK(own.publicKey)), kid: "own-1", alg: "ES256" }],
    kid: "own-1",
    external: { issuer: "https://idp.operator.test", jwksUrl: "https://idp.operator.test/jwks", audience: "twinning" },
    externalKeys,
    nowMs: clock.now,
    provisioningOf: async () => undefined,
  });
  const external = (expiresAtS: number) =>
    new SignJWT({ scope: "twinning" })
      .setProtectedHeader({ alg: "ES256", kid: "idp-1" })
      .setIssuer("https://idp.operator.test")
      .setSubject("tel:+15550000001")
      .setAudience("twinning")
      .setIssuedAt(Math.floor(clock.now() / 1000))
      .setExpirationTime(expiresAtS)
      .sign(idp.privateKey);
  return { clock, tokens, external, withdrawKeys: () => (published = { keys: [] }) };
}

describe("verified tokens", () => {
  it("OAU-001 an external issuer's token stays verified for at most EXTERNAL_RECHECK_SECONDS: once its issuer withdraws the key, the token is refused from then on, though it has not expired", async () => {
    const { clock, tokens, external, withdrawKeys } = await tokensWithExternalIssuer();
    const token = await external(Math.floor(clock.now() / 1000) + 3 * 3600);
    const principal = await tokens.verify(token);
    expect(principal.verifiedUntilS).toBe(Math.floor(clock.now() / 1000) + EXTERNAL_RECHECK_SECONDS);
    expect(principal.verifiedUntilS).toBeLessThan(principal.expiresAtS);
    withdrawKeys();
    // Within the recheck time the cached verification stands (as jose's cached key set would).
    clock.advance((EXTERNAL_RECHECK_SECONDS - 1) * 1000);
    await expect(tokens.verify(token)).resolves.toMatchObject({ subject: "tel:+15550000001" });
    clock.advance(1000);
    await expect(tokens.verify(token)).rejects.toMatchObject({ code: "invalid_token" });
  });

  it("OAU-001 the node's own tokens stay verified until they expire", async () => {
    const { clock, tokens } = await tokensWithExternalIssuer();
    const { token, expiresAtS } = await tokens.mint({ subject: "tel:+15550000002", scope: "twinning", ttlSeconds: 3600 });
    expect((await tokens.verify(token)).verifiedUntilS).toBe(expiresAtS);
    clock.advance(3_599_000);
    await expect(tokens.verify(token)).resolves.toMatchObject({ subject: "tel:+15550000002" });
    clock.advance(1_000);
    await expect(tokens.verify(token)).rejects.toMatchObject({ code: "invalid_token" });
  });
});
