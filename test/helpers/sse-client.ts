export { SseClient, type SseEvent } from "../../simulator/sse-client.ts";
