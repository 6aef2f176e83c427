# %% [context]
import lab_code

# %% [exercise 1]
...
