import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The agent serves dist/ from its binary (agent/build.rs embeds it), on the
// same origin as /api. `npm run dev` proxies /api to an agent run with
// `--ui 127.0.0.1:9465`.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: { proxy: { "/api": "http://127.0.0.1:9465" } },
});
