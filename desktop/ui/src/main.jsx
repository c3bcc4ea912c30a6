import { createRoot } from "react-dom/client";
import { CssBaseline } from "@mui/material";
import { DockerMuiV6ThemeProvider } from "@docker/docker-mui-theme";
import { createDockerDesktopClient } from "@docker/extension-api-client";
import { App } from "./App.jsx";
import { makeTeledock } from "./teledock.js";

const dd = createDockerDesktopClient();
createRoot(document.getElementById("root")).render(
  <DockerMuiV6ThemeProvider>
    <CssBaseline />
    <App teledock={makeTeledock(dd)} />
  </DockerMuiV6ThemeProvider>,
);
