import { readFileSync } from "node:fs";
import { generateKeyPair, type CryptoKey } from "jose";
import { createFederationCa, issueNodeCertificate } from "../../certs/federation-pki.ts";
import { enc } from "../device-client.ts";
import { rawFederationCall } from "../raw-federation.ts";
import type { Sandbox } from "../sandbox.ts";
import { check, eventually, expectEqual, type Scenario, type World } from "../scenario.ts";
import { activate, requestCode, secondaryTwinning, toggleSecondary, togglePrimary, twin } from "./steps.ts";

const sandboxOf = (w: World): Sandbox => {
  check(w.sandbox, "needs the simulator's own sandbox");
  return w.sandbox;
};

/** Every twin of a node, through its admin API (the final-state view). */
/** The operator's twins (its admin listing), or undefined while the listing cannot be read: never read as "no twins". */
async function twinsAt(w: World, operatorId: string): Promise<any[] | undefined> {
  const op = w.operators.find((o) => o.operatorId === operatorId)!;
  const res = await op.api.call("GET", "/admin/v1/twins?limit=10000", { token: op.adminToken }).catch(() => undefined);
  return res?.status === 200 && Array.isArray(res.body?.twins) ? res.body.twins : undefined;
}

const rejection = (id: string, title: string, labels: string[], call: (w: World, s: Sandbox) => Promise<{ status: number; reason: string }>, expected: string): Scenario => ({
  id,
  title,
  labels,
  needs: "sandbox",
  minOperators: 2,
  async run(w) {
    const answer = await call(w, sandboxOf(w));
    check(answer.status === 401 || answer.status === 403, `expected a refusal, got ${answer.status}`);
    check(answer.reason.includes(expected), `the error says why: expected "${expected}", got "${answer.reason}"`);
  },
});

export const faultScenarios: Scenario[] = [
  {
    id: "fault-peer-killed",
    title: "A peer SIGKILLed during toggles and restarted: every change delivered once, nothing lost",
    labels: ["HLF-IC-007", "HLF-TE-002"],
    needs: "sandbox",
    minOperators: 2,
    async run(w) {
      const s = sandboxOf(w);
      const [A, B] = [w.operators[0]!, w.operators[1]!];
      const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
      const { twin: t } = await twin(phone, watch);
      const callbacks = await w.receiver();
      await watch.operator.api.call("POST", `/twinning/v1/secondary/${enc(watch.address)}/subscriptions`, { token: watch.token, body: { callbackReference: { notifyURL: callbacks.url } } });
      await s.kill(B.operatorId, "SIGKILL");
      // Back up for the scenarios after this one, also when a check below fails.
      w.defer(async () => {
        if (!s.get(B.operatorId).process.running) await s.restart(B.operatorId);
      });
      const statuses = ["Off", "On", "Off"];
      for (const status of statuses) expectEqual((await togglePrimary(phone, t.twinId, status)).status, 200, `toggle ${status} while the peer is down`);
      await s.restart(B.operatorId);
      await callbacks.waitFor(3, 20_000);
      await new Promise((r) => setTimeout(r, 500));
      expectEqual(callbacks.received.map((n) => n.twinningStatusNotification?.status), statuses, "notifications at the secondary, once each, in order");
      expectEqual((await secondaryTwinning(watch)).body.twinning?.status, "Off", "final status at the secondary's operator");
    },
  },
  {
    id: "fault-kill-mid-activation",
    title: "The primary's node killed in the middle of a cross-operator activation: both sides agree after restart",
    labels: ["HLF-IC-004"],
    needs: "sandbox",
    minOperators: 2,
    async run(w) {
      const s = sandboxOf(w);
      const [A, B] = [w.operators[0]!, w.operators[1]!];
      const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
      const code = await requestCode(watch);
      const pending = activate(phone, code).catch(() => undefined);
      await new Promise((r) => setTimeout(r, Math.floor(w.random() * 40)));
      await s.kill(A.operatorId, "SIGKILL");
      // An activation answered 201 before the kill was committed: it must survive the crash.
      const answer = await pending;
      const acknowledged: string | undefined = answer?.status === 201 ? answer.body?.twin?.twinId : undefined;
      await s.restart(A.operatorId);
      const watchTwins = async (operatorId: string) => (await twinsAt(w, operatorId))?.filter((t) => t.secondaryAddress === watch.address).map((t) => t.twinId as string);
      const agree = await eventually(
        async () => ({ atA: await watchTwins(A.operatorId), atB: await watchTwins(B.operatorId) }),
        (v) => v.atA !== undefined && v.atB !== undefined && JSON.stringify(v.atA) === JSON.stringify(v.atB),
        "agreement between the two operators (both listings read)",
        20_000,
      );
      check(agree.atA!.length <= 1, "at most one twin");
      if (acknowledged !== undefined) expectEqual(agree.atA, [acknowledged], "the twin the primary was answered 201 for, on both sides after the crash");
    },
  },
  {
    id: "fault-crash-keeps-twins",
    title: "A node killed and started again keeps its twins: status, version, and the secondary's view",
    labels: ["HLF-TE-001"],
    needs: "sandbox",
    minOperators: 1,
    async run(w) {
      const s = sandboxOf(w);
      const A = w.operators[0]!;
      const [phone, watch] = [await w.party(A, "phone"), await w.party(A, "watch")];
      const { twin: t } = await twin(phone, watch);
      expectEqual((await togglePrimary(phone, t.twinId, "Off")).status, 200, "a toggle before the crash");
      const before = (await twinsAt(w, A.operatorId))?.find((x) => x.twinId === t.twinId);
      check(before?.status === "Off", `the twin before the crash: ${JSON.stringify(before)}`);
      await s.kill(A.operatorId, "SIGKILL");
      await s.restart(A.operatorId);
      const after = (await twinsAt(w, A.operatorId))?.find((x) => x.twinId === t.twinId);
      expectEqual([after?.status, after?.version], [before.status, before.version], "the twin after the restart");
      expectEqual((await secondaryTwinning(watch)).body.twinning?.primaryAddress, phone.address, "the secondary's view after the restart");
    },
  },
  {
    id: "fault-partition",
    title: "A partition between two operators with toggles on both sides, then heal: both converge",
    labels: ["HLF-IC-005"],
    needs: "sandbox",
    minOperators: 2,
    async run(w) {
      const s = sandboxOf(w);
      const [A, B] = [w.operators[0]!, w.operators[1]!];
      const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
      const { twin: t } = await twin(phone, watch);
      s.partition(A.operatorId, B.operatorId);
      try {
        for (let i = 0; i < 3; i++) {
          const [p, q] = w.random() < 0.5 ? ["Off", "On"] : ["On", "Off"];
          expectEqual((await togglePrimary(phone, t.twinId, p)).status, 200, "toggle at A during the partition");
          expectEqual((await toggleSecondary(watch, q)).status, 200, "toggle at B during the partition");
        }
      } finally {
        s.heal(A.operatorId, B.operatorId);
      }
      await eventually(
        async () => {
          const a = (await twinsAt(w, A.operatorId))?.find((x) => x.twinId === t.twinId);
          const b = (await twinsAt(w, B.operatorId))?.find((x) => x.twinId === t.twinId);
          return [a?.status, a?.version, b?.status, b?.version];
        },
        (v) => v[0] === v[2] && v[1] === v[3] && v[0] !== undefined,
        "convergence after the heal",
        20_000,
      );
    },
  },
  rejection("fault-clock-skew", "A message from a clock 2 minutes ahead is rejected", ["HLF-IC-001"], (w, s) => {
    const now = Math.floor(Date.now() / 1000);
    return rawFederationCall(s, w.operators[0]!.operatorId, w.operators[1]!.operatorId, { claims: { iat: now + 120, exp: now + 180 } });
  }, "clock skew"),
  rejection("fault-forged-signature", "A message signed with a key that is not the sender's is rejected", ["HLF-IC-001"], async (w, s) => {
    const { privateKey } = await generateKeyPair("ES256");
    // The sender's real kid, a key that is not the sender's.
    const kid = (JSON.parse(readFileSync(s.get(w.operators[0]!.operatorId).signingKeyFile, "utf8")) as { kid: string }).kid;
    return rawFederationCall(s, w.operators[0]!.operatorId, w.operators[1]!.operatorId, { signWith: { key: privateKey as CryptoKey, kid, alg: "ES256" } });
  }, "bad signature"),
  rejection("fault-replay", "A replayed message (same jti) is rejected", ["HLF-IC-001"], async (w, s) => {
    const [from, to] = [w.operators[0]!.operatorId, w.operators[1]!.operatorId];
    const first = await rawFederationCall(s, from, to);
    check(first.status === 201, `the original message is accepted: ${first.status} ${first.reason}`);
    return rawFederationCall(s, from, to, { jws: first.jws });
  }, "replayed jti"),
  rejection("fault-foreign-ca", "A client certificate from another CA is rejected", ["HLF-IC-001"], async (w, s) => {
    const rogue = await issueNodeCertificate({ ca: await createFederationCa({ name: "Rogue CA" }), operatorId: w.operators[0]!.operatorId });
    return rawFederationCall(s, w.operators[0]!.operatorId, w.operators[1]!.operatorId, { tls: rogue });
  }, "not issued by the federation CA"),
  rejection("fault-cert-iss-mismatch", "A certificate whose operator is not the message's iss is rejected", ["HLF-IC-001"], (w, s) => {
    const third = w.operators[2]?.operatorId ?? "009-09";
    return rawFederationCall(s, w.operators[0]!.operatorId, w.operators[1]!.operatorId, { claims: { iss: third } });
  }, "iss does not match"),
];
