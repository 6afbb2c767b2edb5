export type * from "./store-port.ts";
export { SqliteStore } from "./sqlite/sqlite-store.ts";
