// Entry point of the participant page (client/index.html).
import './style.css';
import { runExperiment } from './experiment.ts';

const root = document.getElementById('app');
if (root) {
  runExperiment({ root }).catch((err: unknown) => {
    console.error(err);
    root.textContent = 'Something went wrong. Please reload the page; your answers so far are kept.';
  });
}
