export { CallbackReceiver } from "../../simulator/callback-receiver.ts";
