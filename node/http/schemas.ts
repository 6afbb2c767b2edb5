import { z } from "@hono/zod-openapi";
import { isValidTwinName, TWIN_NAME } from "../domain/twin.ts";

/** Shared request/response schemas of the device API (DESIGN "Device API"). */
export const operatorIdSchema = z.string().regex(/^\d{3}-\d{2,3}$/).openapi({ example: "001-01" });
export const clientCorrelatorSchema = z.string().min(1).max(128);
export const addressSchema = z.string().openapi({ example: "tel:+15550001" });
export const statusSchema = z.enum(["On", "Off"]);

export const errorSchema = z
  .object({
    requestError: z.object({
      serviceException: z.object({ messageId: z.string(), text: z.string(), variables: z.array(z.string()) }).optional(),
      policyException: z.object({ messageId: z.string(), text: z.string(), variables: z.array(z.string()) }).optional(),
    }),
  })
  .openapi("RequestError");

export const twinSchema = z
  .object({
    twinId: z.uuid(),
    primaryAddress: addressSchema,
    secondaryAddress: addressSchema,
    secondaryOperatorId: operatorIdSchema,
    name: z.string(),
    status: statusSchema,
    resourceURL: z.url(),
    accessToken: z.string().optional(),
  })
  .openapi("Twin");

// A name is neither a UUID nor a tel: URI: a twin is named by its twinId, name or secondary address (HLF-PD-003).
const NAME_RULE = "1-64 letters, digits, space . _ ' -; not a twin id, not starting with tel:";
export const nameSchema = z.string().regex(TWIN_NAME, NAME_RULE).refine(isValidTwinName, NAME_RULE);

export const errorResponses = {
  400: { description: "Invalid input (SVC0002, SVC0004, SVC1014, SVC3001)", content: { "application/json": { schema: errorSchema } } },
  401: { description: "Missing, invalid, expired or revoked token (SVC2003)", content: { "application/json": { schema: errorSchema } } },
  403: { description: "Policy (POL0001, POL1037, POL1038, POL2001, POL2003, POL3003)", content: { "application/json": { schema: errorSchema } } },
  404: { description: "Unknown resource (SVC0002)", content: { "application/json": { schema: errorSchema } } },
} as const;

export const bearer = [{ bearer: [] }];
export const addrParam = z.object({ addr: z.string().openapi({ param: { name: "addr", in: "path" }, example: "tel:+15550001" }) });
