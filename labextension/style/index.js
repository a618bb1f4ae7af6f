import './base.css';
import './edit.css';
