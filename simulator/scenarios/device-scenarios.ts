import { SseClient } from "../sse-client.ts";
import { enc, messageId } from "../device-client.ts";
import { check, eventually, skipUnless, expectEqual, type Scenario, type World } from "../scenario.ts";
import { activate, expectError, primaryList, primaryTwin, requestCode, secondaryTwinning, toggleSecondary, togglePrimary, twin } from "./steps.ts";

/** The device-side scenarios (DESIGN's public APIs only): they also run in conformance mode. */
const ops = (w: World) => ({ A: w.operators[0]!, B: w.operators[1 % w.operators.length]!, C: w.operators[2 % w.operators.length]! });

export const deviceScenarios: Scenario[] = [
  {
    id: "intra-operator",
    title: "Intra-operator twin: code, activation, status query, twin-scoped token",
    labels: ["HLF-PD-001", "HLF-SD-001", "HLF-SD-003", "HLF-SD-005", "HLF-SD-006", "HLF-TE-007"],
    needs: "device",
    minOperators: 1,
    async run(w) {
      const { A } = ops(w);
      const [phone, watch] = [await w.party(A, "phone"), await w.party(A, "watch")];
      const code = await requestCode(watch);
      check(/^\d{6,12}$/.test(code.code) && code.operatorId === A.operatorId, `code and issuing operator: ${JSON.stringify(code)}`);
      const res = await activate(phone, code);
      check(res.status === 201 && res.body.twin.status === "On", `activation: ${res.status}`);
      check(typeof res.body.twin.name === "string" && res.body.twin.name.length > 0, "a default name was given");
      const used = await watch.operator.api.call("GET", new URL(code.resourceURL).pathname, { token: watch.token });
      expectEqual(used.body.activationCode.status, "Used", "code status after activation");
      const q = await secondaryTwinning(watch, used.body.activationCode.accessToken);
      expectEqual(q.body.twinning?.primaryAddress, phone.address, "the secondary sees its primary (twin-scoped token)");
    },
  },
  {
    id: "cross-primary-named",
    title: "Cross-operator twin, the secondary names the primary's operator",
    labels: ["HLF-IC-001", "HLF-IC-002", "HLF-IC-003", "HLF-IC-004", "HLF-SD-002", "HLF-TE-006"],
    needs: "device",
    minOperators: 2,
    async run(w) {
      const { A, B } = ops(w);
      const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
      const { code, twin: t } = await twin(phone, watch, { viaPrimaryOperator: true, name: "watch" });
      expectEqual(code.operatorId, A.operatorId, "the code comes from the primary's operator");
      expectEqual(t.secondaryOperatorId, B.operatorId, "secondaryOperatorId");
      const q = await secondaryTwinning(watch);
      expectEqual([q.body.twinning?.primaryAddress, q.body.twinning?.primaryOperatorId], [phone.address, A.operatorId], "primary identity at the secondary's operator");
    },
  },
  {
    id: "cross-own-code",
    title: "Cross-operator twin, the code is issued by the secondary's operator and redeemed across",
    labels: ["HLF-IC-001", "HLF-IC-004", "HLF-TE-006"],
    needs: "device",
    minOperators: 2,
    async run(w) {
      const { A, B } = ops(w);
      const [phone, car] = [await w.party(A, "phone"), await w.party(B, "car")];
      const { code, twin: t } = await twin(phone, car, { name: "car" });
      expectEqual(code.operatorId, B.operatorId, "the secondary's operator issued the code");
      expectEqual(t.name, "car", "name");
      const again = await activate(phone, code);
      expectError(again, 400, "SVC3001", "the code is single-use");
    },
  },
  {
    id: "multi-twins",
    title: "Several twins on one primary across three operators",
    labels: ["HLF-PD-006", "HLF-PD-003"],
    needs: "device",
    minOperators: 3,
    async run(w) {
      const { A, B, C } = ops(w);
      const phone = await w.party(A, "phone");
      await twin(phone, await w.party(A, "watch"), { name: "watch" });
      await twin(phone, await w.party(B, "car"), { name: "car", viaPrimaryOperator: true });
      const tablet = await w.party(C, "watch");
      await twin(phone, tablet, { name: "tablet" });
      const list = await primaryList(phone);
      expectEqual(list.body.twinList.twin.map((t: any) => [t.name, t.secondaryOperatorId]), [["watch", A.operatorId], ["car", B.operatorId], ["tablet", C.operatorId]], "the primary's list");
      expectEqual((await primaryTwin(phone, enc(tablet.address))).body.twin?.name, "tablet", "lookup by secondary address");
    },
  },
  {
    id: "toggles-observed",
    title: "Toggles from both sides, observed by a callback server and an SSE stream",
    labels: ["HLF-PD-002", "HLF-SD-004", "HLF-PD-007", "HLF-SD-008", "HLF-IC-005", "HLF-IC-007", "HLF-CM-005", "HLF-TE-002", "HLF-TE-003"],
    needs: "device",
    minOperators: 2,
    async run(w) {
      const { A, B } = ops(w);
      const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
      const { twin: t } = await twin(phone, watch);
      const callbacks = await w.receiver();
      const sub = await phone.operator.api.call("POST", `/twinning/v1/primary/${enc(phone.address)}/subscriptions`, {
        token: phone.token,
        body: { callbackReference: { notifyURL: callbacks.url, callbackData: "phone-app" } },
      });
      skipUnless(
        !(sub.status === 400 && JSON.stringify(sub.body).includes("notifyURL")),
        "the node refuses loopback callback targets (set limits.allowPrivateCallbackTargets, as simulated nodes do)",
      );
      check(sub.status === 201, `subscription: ${sub.status}`);
      const stream = await SseClient.open(`${watch.operator.deviceUrl}/twinning/v1/secondary/${enc(watch.address)}/notifications`, watch.token);
      w.defer(() => stream.close());
      check(stream.status === 200, `SSE stream: ${stream.status}`);
      // Each side toggles Off and On; the other side's client must see both before it acts
      // (toggling before the change arrived would be a concurrent write, which last-writer-wins resolves).
      const first = w.random() < 0.5 ? "secondary" : "primary";
      for (const side of first === "secondary" ? ["secondary", "primary"] : ["primary", "secondary"]) {
        for (const status of ["Off", "On"]) {
          const res = side === "secondary" ? await toggleSecondary(watch, status) : await togglePrimary(phone, t.twinId, status);
          check(res.status === 200, `toggle ${status} by the ${side}: ${res.status}`);
        }
        if (side === "secondary") {
          const [n1, n2] = await callbacks.waitFor(2, 15_000);
          expectEqual(
            [n1, n2].map((n) => [n.twinningStatusNotification?.status, n.twinningStatusNotification?.changedBy, n.twinningStatusNotification?.callbackData]),
            [["Off", "secondary", "phone-app"], ["On", "secondary", "phone-app"]],
            "callbacks to the primary",
          );
        } else {
          const events = await stream.waitFor(2, 15_000);
          expectEqual(events.map((e) => [e.data.twinningStatusNotification?.status, e.data.twinningStatusNotification?.changedBy]), [["Off", "primary"], ["On", "primary"]], "SSE events at the secondary");
        }
      }
      // Only the other side's changes are told, each once: nothing more arrives.
      await new Promise((r) => setTimeout(r, 300));
      expectEqual([callbacks.received.length, stream.events.length], [2, 2], "notifications in all (callbacks to the primary, SSE events at the secondary)");
      const q = await secondaryTwinning(watch);
      expectEqual(q.body.twinning?.status, "On", "status persisted (Off did not end the twin)");
    },
  },
  {
    id: "rename",
    title: "Rename a twin; find it by its new name",
    labels: ["HLF-TE-007", "HLF-PD-003"],
    needs: "device",
    minOperators: 2,
    async run(w) {
      const { A, B } = ops(w);
      const phone = await w.party(A, "phone");
      const { twin: t } = await twin(phone, await w.party(B, "watch"));
      const res = await phone.operator.api.call("PATCH", `/twinning/v1/primary/${enc(phone.address)}/twins/${t.twinId}`, { token: phone.token, body: { name: "my-blue-watch" } });
      expectEqual(res.body.twin?.name, "my-blue-watch", "renamed");
      expectEqual((await primaryTwin(phone, "my-blue-watch")).body.twin?.twinId, t.twinId, "lookup by name");
    },
  },
  {
    id: "deactivation-both-sides",
    title: "Deactivation from either side ends the twin on both operators and revokes its tokens",
    labels: ["HLF-PD-004", "HLF-SD-007", "HLF-TE-004"],
    needs: "device",
    minOperators: 2,
    async run(w) {
      const { A, B } = ops(w);
      for (const from of ["primary", "secondary"] as const) {
        const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
        const { twin: t } = await twin(phone, watch);
        const del =
          from === "primary"
            ? await phone.operator.api.call("DELETE", `/twinning/v1/primary/${enc(phone.address)}/twins/${t.twinId}`, { token: phone.token })
            : await watch.operator.api.call("DELETE", `/twinning/v1/secondary/${enc(watch.address)}/twinning`, { token: watch.token });
        expectEqual(del.status, 204, `deactivation by the ${from}`);
        await eventually(() => secondaryTwinning(watch), (r) => r.status === 404, `the secondary's twin gone after a ${from} deactivation`);
        await eventually(() => primaryList(phone), (r) => r.body.twinList?.twin?.length === 0, `the primary's list empty after a ${from} deactivation`);
        const dead = await primaryTwin(phone, t.twinId, t.accessToken);
        expectError(dead, 401, "SVC2003", "the primary's twin token after deactivation");
      }
    },
  },
  {
    id: "role-rules",
    title: "Role rules: no secondary in two twins, no primary as secondary, no secondary as primary",
    labels: ["HLF-TE-008", "HLF-TE-009"],
    needs: "device",
    minOperators: 2,
    async run(w) {
      const { A, B } = ops(w);
      const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
      await twin(phone, watch);
      const second = await watch.operator.api.call("POST", `/twinning/v1/secondary/${enc(watch.address)}/activationCodes`, { token: watch.token, body: {} });
      expectError(second, 409, "POL3001", "a second relationship for the secondary");
      const asSecondary = await phone.operator.api.call("POST", `/twinning/v1/secondary/${enc(phone.address)}/activationCodes`, { token: phone.token, body: {} });
      expectError(asSecondary, 403, "POL1037", "the primary asking a code as a secondary");
      const other = await w.party(A, "watch");
      const code = await requestCode(other);
      expectError(await activate(watch, code), 403, "POL1037", "the secondary activating as a primary");
    },
  },
  {
    id: "code-expiry",
    title: "An activation code expires by policy",
    labels: ["HLF-TE-005"],
    needs: "device",
    minOperators: 1,
    async run(w) {
      const { A } = ops(w);
      const [phone, watch] = [await w.party(A, "phone"), await w.party(A, "watch")];
      const code = await requestCode(watch);
      const waitMs = Date.parse(code.expiresAt) - Date.now() + 1_000;
      check(Number.isFinite(waitMs), `the code's expiresAt is not a date: ${JSON.stringify(code.expiresAt)}`);
      skipUnless(waitMs < 30_000, `the code lives ${Math.round(waitMs / 1000)} s: too long to wait for here (set policy.codeTtlSeconds under 30; simulated nodes use 10)`);
      await new Promise((r) => setTimeout(r, Math.max(0, waitMs)));
      expectError(await activate(phone, code), 400, "SVC3001", "an expired code");
      const read = await watch.operator.api.call("GET", new URL(code.resourceURL).pathname, { token: watch.token });
      expectEqual(read.body.activationCode?.status, "Expired", "code status");
    },
  },
  {
    id: "brute-force",
    title: "Guessing codes is stopped by the failed-attempt limit (429 POL3004)",
    labels: ["HLF-CM-006"],
    needs: "device",
    minOperators: 1,
    async run(w) {
      const { A } = ops(w);
      const [phone, watch] = [await w.party(A, "phone"), await w.party(A, "watch")];
      const real = await requestCode(watch);
      let limitedAt = 0;
      for (let i = 1; i <= 20 && !limitedAt; i++) {
        const guess = String(Math.floor(w.random() * 10 ** real.code.length)).padStart(real.code.length, "0");
        const res = await activate(phone, { code: guess === real.code ? "0".repeat(real.code.length) : guess, operatorId: real.operatorId });
        if (res.status === 429) {
          check(messageId(res.body) === "POL3004" && Number(res.headers.get("retry-after")) > 0, "429 carries POL3004 and Retry-After");
          limitedAt = i;
        } else expectError(res, 400, "SVC3001", `wrong guess ${i}`);
      }
      check(limitedAt > 0, "no limit within 20 wrong guesses");
      expectError(await activate(phone, real), 429, "POL3004", "even the right code while limited");
    },
  },
  {
    id: "token-exchange",
    title: "Token exchange: the secondary gets a primary-services token from the primary's operator, introspected there",
    labels: ["HLF-SD-009", "HLF-IC-006", "OAU-001", "OAU-002"],
    needs: "device",
    minOperators: 2,
    async run(w) {
      const { A, B } = ops(w);
      const [phone, watch] = [await w.party(A, "phone"), await w.party(B, "watch")];
      await twin(phone, watch);
      const res = await watch.operator.api.call("POST", `/twinning/v1/secondary/${enc(watch.address)}/twinning/primaryServicesToken`, { token: watch.token });
      check(res.status === 200 && typeof res.body.primaryServices?.accessToken === "string", `primary-services token: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
      check(typeof res.body.primaryServices.endpoints?.messaging === "string", "the primary's messaging endpoint is given");
      const introspection = (
        await A.api.call("POST", "/oauth/introspect", {
          token: A.adminToken,
          headers: { "content-type": "application/x-www-form-urlencoded" },
          rawBody: `token=${encodeURIComponent(res.body.primaryServices.accessToken)}`,
        })
      ).body;
      expectEqual([introspection.active, introspection.sub, introspection.act?.sub, introspection.scope], [true, phone.address, watch.address, "primary-services"], "introspection at the primary's operator");
    },
  },
];
