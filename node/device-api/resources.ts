import { encodeAddress } from "../domain/address.ts";
import type { Twin, TwinRole } from "../domain/twin.ts";
import type { NodeContext } from "../service/node-context.ts";
import type { ActivationCodeRecord, SubscriptionRecord } from "../store/store-port.ts";

/** Wire shapes of the device API's resources (DESIGN "Device API"), built in one place. */
const api = (ctx: NodeContext) => `${ctx.deviceBaseUrl()}/twinning/v1`;

/**
 * The twin's resource on this node as `side` sees it: the primary's twin, or the secondary's
 * twinning (the secondary's node of a twin across operators serves no primary's resource).
 */
export function twinResourceUrl(ctx: NodeContext, twin: Twin, side: TwinRole = "primary"): string {
  return side === "primary"
    ? `${api(ctx)}/primary/${encodeAddress(twin.primaryAddress)}/twins/${twin.twinId}`
    : `${api(ctx)}/secondary/${encodeAddress(twin.secondaryAddress)}/twinning`;
}

export function twinView(ctx: NodeContext, twin: Twin, accessToken?: string, side: TwinRole = "primary") {
  return {
    twinId: twin.twinId,
    primaryAddress: twin.primaryAddress,
    secondaryAddress: twin.secondaryAddress,
    secondaryOperatorId: twin.secondaryOperatorId,
    name: twin.name,
    status: twin.status,
    resourceURL: twinResourceUrl(ctx, twin, side),
    ...(accessToken ? { accessToken } : {}),
  };
}

export function twinningView(twin: Twin) {
  return {
    twinning: {
      twinId: twin.twinId,
      primaryAddress: twin.primaryAddress,
      primaryOperatorId: twin.primaryOperatorId,
      status: twin.status,
      name: twin.name,
    },
  };
}

export function activationCodeView(
  ctx: NodeContext,
  record: ActivationCodeRecord,
  extra: { code?: string; twin?: Twin; accessToken?: string } = {},
) {
  return {
    activationCode: {
      ...(extra.code ? { code: extra.code } : {}),
      operatorId: record.issuerOperatorId,
      expiresAt: new Date(record.expiresAtMs).toISOString(),
      status: record.state,
      resourceURL: `${api(ctx)}/secondary/${encodeAddress(record.secondaryAddress)}/activationCodes/${record.codeId}`,
      ...(extra.twin ? { twin: twinView(ctx, extra.twin, undefined, "secondary") } : {}),
      ...(extra.accessToken ? { accessToken: extra.accessToken } : {}),
    },
  };
}

export function subscriptionView(ctx: NodeContext, s: SubscriptionRecord) {
  return {
    callbackReference: { notifyURL: s.notifyUrl, ...(s.callbackData === undefined ? {} : { callbackData: s.callbackData }) },
    ...(s.expiresAtMs === undefined ? {} : { duration: Math.round((s.expiresAtMs - s.createdAtMs) / 1000) }),
    resourceURL: `${api(ctx)}/${s.role}/${encodeAddress(s.address)}/subscriptions/${s.subscriptionId}`,
  };
}
