import os
import sys

# The scripts live at the top level (no package): make them importable from tests/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
