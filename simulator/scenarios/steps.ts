import { enc, messageId, type ApiResponse } from "../device-client.ts";
import { check, type Party } from "../scenario.ts";

/** Device-side steps the scenarios share: each one call of DESIGN's device API, checked. */
export async function requestCode(secondary: Party, primaryOperatorId?: string) {
  const res = await secondary.operator.api.call("POST", `/twinning/v1/secondary/${enc(secondary.address)}/activationCodes`, {
    token: secondary.token,
    body: primaryOperatorId ? { primaryOperatorId } : {},
  });
  check(res.status === 201, `code request at ${secondary.operator.operatorId}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.activationCode as { code: string; operatorId: string; expiresAt: string; status: string; resourceURL: string };
}

export function activate(primary: Party, code: { code: string; operatorId: string }, name?: string): Promise<ApiResponse> {
  return primary.operator.api.call("POST", `/twinning/v1/primary/${enc(primary.address)}/twins`, {
    token: primary.token,
    body: { activationCode: code.code, operatorId: code.operatorId, ...(name ? { name } : {}) },
  });
}

/** Code from the secondary's side, redeemed by the primary: the twin resource. */
export async function twin(primary: Party, secondary: Party, options: { viaPrimaryOperator?: boolean; name?: string } = {}) {
  const code = await requestCode(secondary, options.viaPrimaryOperator ? primary.operator.operatorId : undefined);
  const res = await activate(primary, code, options.name);
  check(res.status === 201, `activation at ${primary.operator.operatorId}: ${res.status} ${JSON.stringify(res.body)}`);
  return { code, twin: res.body.twin as { twinId: string; name: string; status: string; secondaryOperatorId: string; accessToken: string } };
}

export const secondaryTwinning = (s: Party, token = s.token) => s.operator.api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token });
export const primaryTwin = (p: Party, ref: string, token = p.token) => p.operator.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${ref}`, { token });
export const primaryList = (p: Party) => p.operator.api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
export const togglePrimary = (p: Party, ref: string, status: string) =>
  p.operator.api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${ref}/status`, { token: p.token, body: { status } });
export const toggleSecondary = (s: Party, status: string) =>
  s.operator.api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status } });

export function expectError(res: ApiResponse, status: number, id: string, what: string): void {
  check(res.status === status && messageId(res.body) === id, `${what}: expected ${status} ${id}, got ${res.status} ${messageId(res.body) ?? JSON.stringify(res.body).slice(0, 120)}`);
}
