import fc from "fast-check";
import { afterAll, beforeAll, describe, it } from "vitest";
import { hashCredential } from "../../node/tokens/credentials.ts";
import { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { Federation } from "../helpers/federation-fixture.ts";
import { CODE_LENGTH, OPERATORS, commandArbitraries, finish, newRun, outcomeCounts, type World } from "./twinning-model.ts";

/**
 * Model-based test (fast-check): random sequences of code requests, activations with right,
 * stale and wrong codes, toggles from both sides (one at a time and racing), renames,
 * deactivations, token use and token exchange, over three real operators federated over mTLS;
 * after every step the nodes are compared with the in-memory model of `twinning-model.ts`.
 *
 * MODEL_RUNS (default 200) sets the number of runs, MODEL_SEED replays a seed (add
 * MODEL_PATH for the path fast-check printed). A failure prints the shrunk command sequence and
 * the trace of its run. MODEL_STATS=1 prints how often each outcome was seen;
 * MODEL_STRICT_NAMES=1 also requires a renamed twin's new name at the secondary's operator (see STRICT_NAMES).
 */
const RUNS = Number(process.env.MODEL_RUNS ?? 200);
const SEED = process.env.MODEL_SEED === undefined ? undefined : Number(process.env.MODEL_SEED);
const PATH = process.env.MODEL_PATH;
/** Generous per-run budget (a run takes ~0.04 s on 2 cores) plus time to shrink a failure. */
const TIMEOUT_MS = 90_000 + RUNS * 300;

const fed = new Federation();
let world: World;
let credentialHash = "";

beforeAll(async () => {
  // Guessing limits are modelled elsewhere (guess-budget, store contract); here wrong codes must
  // always answer SVC3001, so the budgets are out of reach. Longer codes make a wrong code
  // hitting another run's pending code negligible (10^-10 per pending code).
  const policy = {
    codeLength: CODE_LENGTH,
    maxFailedAttemptsPerPrimary: 1_000,
    maxFailedAttemptsPerOperator: 1_000_000,
    maxFailedAttemptsTotal: 1_000_000,
    maxFailedAttemptsPerCode: 1_000_000,
  };
  await fed.start(OPERATORS, () => ({ policy }));
  world = { ops: OPERATORS.map((o) => fed.get(o)), receiver: await new CallbackReceiver().start(), seen: 0, dead: OPERATORS.map(() => 0) };
  credentialHash = await hashCredential("model-based-test-credential");
}, 60_000);

afterAll(async () => {
  if (process.env.MODEL_STATS) console.log([...outcomeCounts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${String(n).padStart(6)}  ${k}`).join("\n"));
  await world?.receiver.stop();
  await fed.stop();
});

describe("model-based test over three operators", () => {
  it(
    "HLF-TE-008 HLF-TE-009 HLF-TE-004 HLF-IC-005 HLF-IC-007 HLF-SD-009 model-based: random operations over 3 operators keep the invariants",
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.commands(commandArbitraries, { maxCommands: 12, size: "max" }), async (commands) => {
          let model: Awaited<ReturnType<typeof newRun>> | undefined;
          await fc.asyncModelRun(async () => {
            model = await newRun(world, credentialHash);
            return { model, real: world };
          }, commands);
          await finish(model!, world);
        }),
        {
          numRuns: RUNS,
          ...(SEED === undefined ? {} : { seed: SEED }),
          ...(PATH === undefined ? {} : { path: PATH }),
          plugins: [fc.interruptAfterTimeLimit(TIMEOUT_MS - 15_000, { failOnInterrupt: true })],
        },
      );
    },
    TIMEOUT_MS,
  );
});
